// Tasks: create, my tasks (open/done) with "complete", and for managers/admins all tasks
// with filters and the "reassign open tasks" button. The lists come from the gateway's
// BoardService.GetTaskBoard: each task with its assignee's name and its prices in one
// call; a part the gateway could not fetch (Account or Accounting down) is named in
// `missing`, and the tasks are listed without it.
import { board, can, idempotent, mayCall, session, tasks } from "../api.js";
import { busy, confirmDialog, field, h, Notice, replace } from "../dom.js";
import { humanError, markInvalid } from "../errors.js";
import { dateTime, money } from "../format.js";
import { Part } from "../gen/popug/gateway/v1/board_pb.js";
import { TaskService, TaskStatus, type Task } from "../gen/popug/tasks/v1/tasks_pb.js";
import { displayName, profiles } from "../people.js";

const PAGE = 50;

export function tasksPage(main: HTMLElement): void {
  const me = session()!.claims;
  const sections: HTMLElement[] = [h("h1", {}, "Tasks")];
  const lists: TaskList[] = [];

  // --- create ---
  const createNotice = new Notice();
  const title = h("input", { name: "title", maxlength: 200, required: true, autocomplete: "off" });
  const jira = h("input", { name: "jira_id", placeholder: "UBERPOP-42", autocomplete: "off", autocapitalize: "characters" });
  const description = h("textarea", { name: "description", rows: 3, maxlength: 10000 });
  const createBtn = h("button", { type: "submit", class: "primary" }, "Create task");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "create-title", novalidate: true },
    h("h2", { id: "create-title" }, "New task"),
    createNotice.el,
    h("div", { class: "row" }, field("Title", title, "No [ or ] — put the Jira key in its own field."), field("Jira id", jira, "Optional, e.g. UBERPOP-42")),
    field("Description", description),
    createBtn,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    createNotice.clear();
    try {
      const res = await busy(createBtn, () =>
        tasks.createTask({ title: title.value.trim(), jiraId: jira.value.trim(), description: description.value }, idempotent()),
      );
      const t = res.task!;
      await profiles([t.assigneeId]).catch(() => undefined);
      createNotice.ok(`Task #${t.publicId} "${t.title}" created and assigned to ${displayName(t.assigneeId)}.`);
      form.reset();
      for (const l of lists) void l.reload();
      markInvalid(null, { title, jiraId: jira, description });
    } catch (err) {
      createNotice.error(humanError(err));
      markInvalid(err, { title, jiraId: jira, description });
    }
  });
  sections.push(form);

  // --- my tasks (assignable roles) ---
  if (mayCall(TaskService.method.completeTask)) {
    const mine = new TaskList({ heading: "My tasks", id: "my-tasks", assigneeId: me.sub, status: TaskStatus.OPEN, showAssignee: false, canComplete: true });
    lists.push(mine);
    sections.push(mine.el);
  }

  // --- all tasks (managers/admins) ---
  if (can("tasks.read_all")) {
    const all = new TaskList({ heading: "All tasks", id: "all-tasks", assigneeId: "", status: TaskStatus.UNSPECIFIED, showAssignee: true, canComplete: false, filters: true });
    lists.push(all);
    if (mayCall(TaskService.method.reassignOpenTasks)) {
      const reassignNotice = new Notice();
      const btn = h("button", { type: "button", class: "danger" }, "Reassign open tasks");
      btn.addEventListener("click", async () => {
        reassignNotice.clear();
        let moved = "";
        // How many would move, as far as one page tells (the button moves them all).
        let open = "Every open task";
        try {
          const page = await busy(btn, () => tasks.listTasks({ status: TaskStatus.OPEN, pageSize: 500 }));
          const n = page.tasks.length;
          open = page.nextPageToken ? "More than 500 open tasks go" : n === 1 ? "1 open task goes" : `${n} open tasks go`;
        } catch {
          // The dialog still works without the count.
        }
        const ok = await confirmDialog({
          title: "Reassign open tasks?",
          body: `${open === "Every open task" ? "Every open task goes" : open} to a random worker or accountant (done tasks stay where they are). Each new assignment charges the assignee's fee.`,
          confirm: "Reassign",
          onConfirm: async () => {
            const res = await tasks.reassignOpenTasks({});
            const n = Number(res.reassigned);
            moved = n === 0 ? "There were no open tasks to reassign." : `Reassigned ${n} open task${n === 1 ? "" : "s"}.`;
            return moved;
          },
        });
        if (ok) {
          reassignNotice.ok(moved);
          for (const l of lists) void l.reload();
        }
      });
      sections.push(h("section", { class: "card", "aria-labelledby": "reassign-title" }, h("h2", { id: "reassign-title" }, "Reassign"), h("p", {}, "Shuffle every open task to a random popug."), btn, reassignNotice.el));
    }
    sections.push(all.el);
  }

  replace(main, ...sections);
  for (const l of lists) void l.reload();
}

interface ListOptions {
  heading: string;
  id: string;
  assigneeId: string;
  status: TaskStatus;
  showAssignee: boolean;
  canComplete: boolean;
  filters?: boolean;
}

/** One row of a list: the task and what the board knew about it when it was loaded. */
interface Row {
  task: Task;
  /** "Name Surname (username)"; empty when the name is unknown. */
  assignee: string;
  /** The names could not be fetched for this row's page. */
  namesMissing: boolean;
  priced: boolean;
  /** The prices could not be fetched for this row's page. */
  pricesMissing: boolean;
  assignFeeCents: bigint;
  rewardCents: bigint;
}

function assigneeLabel(name: string, username: string): string {
  if (!username) return "";
  const full = name.trim();
  return full ? `${full} (${username})` : username;
}

class TaskList {
  readonly el: HTMLElement;
  private readonly body = h("div", { class: "list", "aria-busy": "true" });
  private readonly notice = new Notice();
  /** What the board could not fetch (names, prices): the tasks are still listed. */
  private readonly partial = new Notice();
  private readonly more = h("button", { type: "button", hidden: true }, "Load more");
  private readonly statusSel: HTMLSelectElement;
  private readonly assigneeSel: HTMLSelectElement | null;
  private token = "";
  private items: Row[] = [];
  private generation = 0;

  constructor(private readonly opts: ListOptions) {
    const headingId = `${opts.id}-title`;
    this.statusSel = h(
      "select",
      { name: `${opts.id}-status` },
      opts.filters ? h("option", { value: String(TaskStatus.UNSPECIFIED) }, "Any status") : null,
      h("option", { value: String(TaskStatus.OPEN) }, "Open"),
      h("option", { value: String(TaskStatus.DONE) }, "Done"),
    );
    this.statusSel.value = String(opts.status);
    this.statusSel.addEventListener("change", () => void this.reload());
    this.assigneeSel = opts.filters ? h("select", { name: `${opts.id}-assignee` }, h("option", { value: "" }, "Anyone")) : null;
    this.assigneeSel?.addEventListener("change", () => void this.reload());
    const refresh = h("button", { type: "button", onclick: () => void this.reload() }, "Refresh");
    this.more.addEventListener("click", () => void this.load(false));
    this.el = h(
      "section",
      { class: "card", id: opts.id, "aria-labelledby": headingId },
      h("h2", { id: headingId }, opts.heading),
      h("div", { class: "row filters" }, field("Status", this.statusSel), this.assigneeSel ? field("Assignee", this.assigneeSel) : null, h("div", { class: "field end" }, refresh)),
      this.notice.el,
      this.partial.el,
      this.body,
      this.more,
    );
  }

  reload(): Promise<void> {
    this.token = "";
    this.items = [];
    return this.load(true);
  }

  private async load(first: boolean): Promise<void> {
    const gen = ++this.generation;
    this.notice.clear();
    if (first) this.body.setAttribute("aria-busy", "true");
    try {
      const res = await board.getTaskBoard({
        pageSize: PAGE,
        pageToken: this.token,
        status: Number(this.statusSel.value) as TaskStatus,
        assigneeId: this.assigneeSel ? this.assigneeSel.value : this.opts.assigneeId,
      });
      if (gen !== this.generation) return;
      const namesMissing = res.missing.includes(Part.NAMES);
      const pricesMissing = res.missing.includes(Part.PRICES);
      for (const b of res.tasks) {
        if (!b.task) continue;
        this.items.push({
          task: b.task,
          assignee: namesMissing ? "" : assigneeLabel(b.assigneeName, b.assigneeUsername),
          namesMissing,
          priced: b.priced && !pricesMissing,
          pricesMissing,
          assignFeeCents: b.assignFeeCents,
          rewardCents: b.rewardCents,
        });
      }
      this.token = res.nextPageToken;
      this.more.hidden = !this.token;
      if (this.opts.showAssignee) this.fillAssignees();
      this.showPartial();
      this.draw();
    } catch (err) {
      if (gen !== this.generation) return;
      this.partial.clear();
      this.notice.error(humanError(err));
    } finally {
      if (gen === this.generation) this.body.removeAttribute("aria-busy");
    }
  }

  /** Says which parts of the loaded rows the gateway could not fetch. */
  private showPartial(): void {
    const names = this.opts.showAssignee && this.items.some((r) => r.namesMissing);
    const prices = this.items.some((r) => r.pricesMissing);
    if (!names && !prices) {
      this.partial.clear();
      return;
    }
    const what = names && prices ? "Names and prices unavailable" : names ? "Names unavailable" : "Prices unavailable";
    const how = names && prices
      ? "assignees are shown by a short id and the tasks without their prices"
      : names
        ? "assignees are shown by a short id"
        : "the tasks are listed without their prices";
    this.partial.warn(`${what} right now: ${how}. Refresh in a moment to try again.`);
  }

  /** Adds the assignees of the loaded rows (when their names are known) to the filter. */
  private fillAssignees(): void {
    const sel = this.assigneeSel;
    if (!sel) return;
    const have = new Set([...sel.options].map((o) => o.value));
    const add = new Map<string, string>();
    for (const r of this.items) {
      if (r.assignee && !have.has(r.task.assigneeId)) add.set(r.task.assigneeId, r.assignee);
    }
    if (add.size === 0) return;
    const options = [...sel.options].slice(1).map((o) => [o.value, o.text] as const).concat([...add]);
    options.sort((a, b) => a[1].localeCompare(b[1]));
    const selected = sel.value;
    sel.replaceChildren(sel.options[0], ...options.map(([id, label]) => h("option", { value: id }, label)));
    sel.value = selected;
  }

  private draw(): void {
    if (this.items.length === 0) {
      replace(this.body, h("p", { class: "empty" }, "No tasks here."));
      return;
    }
    replace(this.body, h("ul", { class: "tasks" }, this.items.map((r) => this.row(r))));
  }

  private price(r: Row): HTMLElement {
    if (r.priced) {
      return h("span", { class: "price" }, `fee ${money(r.assignFeeCents)} · reward ${money(r.rewardCents)}`);
    }
    // Not missing but unpriced: Accounting has not seen the task yet (it prices it once).
    return h("span", { class: "price unknown" }, r.pricesMissing ? "price unavailable" : "price pending");
  }

  private row(r: Row): HTMLElement {
    const t = r.task;
    const done = t.status === TaskStatus.DONE;
    const assignee = r.assignee || (t.assigneeId ? `${t.assigneeId.slice(0, 8)}…` : "—");
    const li = h(
      "li",
      { class: `task ${done ? "done" : "open"}`, "data-task-id": t.id },
      h(
        "div",
        { class: "task-main" },
        h("div", { class: "task-title" }, h("span", { class: "num" }, `#${t.publicId}`), t.jiraId ? h("span", { class: "jira" }, t.jiraId) : null, h("strong", {}, t.title)),
        t.description ? h("p", { class: "desc" }, t.description) : null,
        h(
          "p",
          { class: "meta" },
          h("span", { class: `badge ${done ? "done" : "open"}` }, done ? "Done" : "Open"),
          this.opts.showAssignee ? [" · ", h("span", { class: "assignee", title: r.assignee ? null : "name unavailable" }, assignee)] : null,
          " · ",
          this.price(r),
          ` · created ${dateTime(t.createdAt)}`,
          done && t.completedAt ? ` · completed ${dateTime(t.completedAt)}` : null,
        ),
      ),
    );
    if (this.opts.canComplete && !done) {
      const btn = h("button", { type: "button", class: "primary", "aria-label": `Complete task #${t.publicId} ${t.title}` }, "Complete");
      btn.addEventListener("click", async () => {
        try {
          const res = await busy(btn, () => tasks.completeTask({ id: t.id }));
          this.notice.ok(`Task #${res.task?.publicId ?? t.publicId} "${t.title}" is done. Well done!`);
          const keepNotice = this.notice.el.textContent;
          await this.reload();
          if (keepNotice) this.notice.ok(keepNotice);
        } catch (err) {
          this.notice.error(humanError(err));
        }
      });
      li.append(btn);
    }
    return li;
  }
}
