// Tasks: create, my tasks (open/done) with "complete", and for managers/admins all tasks
// with filters and the "reassign open tasks" button.
import { can, idempotent, mayCall, session, tasks } from "../api.js";
import { busy, confirmDialog, field, h, Notice, replace } from "../dom.js";
import { humanError, markInvalid } from "../errors.js";
import { dateTime } from "../format.js";
import { TaskService, TaskStatus, type Task } from "../gen/popug/tasks/v1/tasks_pb.js";
import { displayName, known, profiles } from "../people.js";

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

class TaskList {
  readonly el: HTMLElement;
  private readonly body = h("div", { class: "list", "aria-busy": "true" });
  private readonly notice = new Notice();
  private readonly more = h("button", { type: "button", hidden: true }, "Load more");
  private readonly statusSel: HTMLSelectElement;
  private readonly assigneeSel: HTMLSelectElement | null;
  private token = "";
  private items: Task[] = [];
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
      const res = await tasks.listTasks({
        pageSize: PAGE,
        pageToken: this.token,
        status: Number(this.statusSel.value) as TaskStatus,
        assigneeId: this.assigneeSel ? this.assigneeSel.value : this.opts.assigneeId,
      });
      if (gen !== this.generation) return;
      this.items.push(...res.tasks);
      this.token = res.nextPageToken;
      this.more.hidden = !this.token;
      if (this.opts.showAssignee) {
        await profiles(this.items.map((t) => t.assigneeId)).catch(() => undefined);
        this.fillAssignees();
      }
      this.draw();
    } catch (err) {
      this.notice.error(humanError(err));
    } finally {
      this.body.removeAttribute("aria-busy");
    }
  }

  private fillAssignees(): void {
    const sel = this.assigneeSel;
    if (!sel) return;
    const have = new Set([...sel.options].map((o) => o.value));
    for (const p of known()) {
      if (!have.has(p.id)) sel.append(h("option", { value: p.id }, `${p.name} ${p.surname} (${p.username})`));
    }
  }

  private draw(): void {
    if (this.items.length === 0) {
      replace(this.body, h("p", { class: "empty" }, "No tasks here."));
      return;
    }
    replace(this.body, h("ul", { class: "tasks" }, this.items.map((t) => this.row(t))));
  }

  private row(t: Task): HTMLElement {
    const done = t.status === TaskStatus.DONE;
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
          this.opts.showAssignee ? ` · ${displayName(t.assigneeId)}` : null,
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
