// Accounting: my balance and my audit log by day; accountants/admins: anyone's balance and
// log, management earnings today and per day (SVG bars); admins: close the day by hand.
import { accounting, can, mayCall, session } from "../api.js";
import { busy, confirmDialog, field, h, Notice, replace } from "../dom.js";
import { humanError } from "../errors.js";
import { addDays, money, shortDay, time } from "../format.js";
import { AccountingService, type DayEarnings, type Entry } from "../gen/popug/accounting/v1/accounting_pb.js";
import { AccountService } from "../gen/popug/account/v1/account_pb.js";
import { EntryKind } from "../gen/popug/accounting/v1/events_pb.js";
import { allAccounts, displayName, profiles, roleNames } from "../people.js";

const kindNames: Record<EntryKind, string> = {
  [EntryKind.UNSPECIFIED]: "—",
  [EntryKind.ASSIGN_FEE]: "Assignment fee",
  [EntryKind.COMPLETION_REWARD]: "Completion reward",
  [EntryKind.PAYOUT]: "Payout",
};

export function accountingPage(main: HTMLElement): void {
  const me = session()!.claims;
  // Anyone's ledger and the earnings: the same people (accountants, admins).
  const readAll = mayCall(AccountingService.method.getManagementEarnings) && can("accounting.read_all");
  const log = new AuditLog(me.sub, "me");
  const balance = new Balance();
  const sections: HTMLElement[] = [h("h1", {}, "Accounting"), balance.el, log.el];

  let everyone: Everyone | undefined;
  if (readAll) {
    const earnings = new Earnings();
    sections.splice(1, 0, earnings.el);
    if (mayCall(AccountingService.method.closeDay)) sections.splice(2, 0, closeDaySection(() => {
      void balance.load(me.sub);
      void earnings.load();
      void log.load();
      void everyone?.load();
    }));
    everyone = new Everyone((id, label) => {
      log.show(id, label);
      log.el.scrollIntoView({ behavior: "smooth", block: "start" });
    });
    sections.push(everyone.el);
    void earnings.load();
    void everyone.load();
  }
  replace(main, ...sections);
  void balance.load(me.sub).then((day) => {
    if (day) log.setDay(day);
    void log.load();
  });
}

class Balance {
  readonly el: HTMLElement;
  private readonly value = h("p", { class: "big", "data-testid": "my-balance" }, "…");
  private readonly day = h("p", { class: "meta" });
  private readonly notice = new Notice();
  constructor() {
    this.el = h("section", { class: "card", "aria-labelledby": "bal-title" }, h("h2", { id: "bal-title" }, "My balance"), this.notice.el, this.value, this.day);
  }
  async load(userId: string): Promise<string | null> {
    this.notice.clear();
    try {
      const res = await accounting.getBalance({ userId });
      this.value.textContent = money(res.balanceCents);
      this.value.classList.toggle("negative", res.balanceCents < 0n);
      this.day.textContent = `Billing day ${res.billingDay}. A positive balance is paid out when the day closes; a negative one carries over.`;
      return res.billingDay;
    } catch (err) {
      this.value.textContent = "—";
      this.notice.error(humanError(err));
      return null;
    }
  }
}

class AuditLog {
  readonly el: HTMLElement;
  private readonly heading = h("h2", { id: "log-title" }, "My audit log");
  private readonly mineBtn = h("button", { type: "button", hidden: true }, "Back to mine");
  /** Empty until the server says which billing day it is (empty asks for today's). */
  private readonly dayInput = h("input", { type: "date", name: "log-day" });
  private readonly body = h("div", { class: "list" });
  private readonly notice = new Notice();
  private readonly more = h("button", { type: "button", hidden: true }, "Load more");
  private entries: Entry[] = [];
  private token = "";
  private gen = 0;

  constructor(private userId: string, private label: string) {
    const prev = h("button", { type: "button", "aria-label": "Previous day", onclick: () => this.step(-1) }, "◀");
    const next = h("button", { type: "button", "aria-label": "Next day", onclick: () => this.step(1) }, "▶");
    const refresh = h("button", { type: "button", onclick: () => void this.load() }, "Refresh");
    this.mineBtn.addEventListener("click", () => this.show(session()!.claims.sub, "me"));
    this.dayInput.addEventListener("change", () => void this.load());
    this.more.addEventListener("click", () => void this.page());
    this.el = h(
      "section",
      { class: "card", id: "audit-log", "aria-labelledby": "log-title" },
      this.heading,
      h("div", { class: "row filters" }, field("Billing day", this.dayInput), h("div", { class: "field end" }, h("div", { class: "btns" }, prev, next, refresh, this.mineBtn))),
      this.notice.el,
      this.body,
      this.more,
    );
  }

  setDay(day: string): void {
    this.dayInput.value = day;
  }

  show(userId: string, label: string): void {
    this.userId = userId;
    this.label = label;
    void this.load();
  }

  private step(delta: number): void {
    if (!this.dayInput.value) return;
    this.dayInput.value = addDays(this.dayInput.value, delta);
    void this.load();
  }

  async load(): Promise<void> {
    this.entries = [];
    this.token = "";
    const mine = this.label === "me";
    this.heading.textContent = mine ? "My audit log" : `Audit log of ${this.label}`;
    this.mineBtn.hidden = mine;
    await this.page();
  }

  private async page(): Promise<void> {
    const gen = ++this.gen;
    this.notice.clear();
    try {
      const res = await accounting.listEntries({
        userId: this.label === "me" ? "" : this.userId,
        billingDay: this.dayInput.value,
        pageSize: 100,
        pageToken: this.token,
      });
      if (gen !== this.gen) return;
      this.entries.push(...res.entries);
      this.token = res.nextPageToken;
      this.more.hidden = !this.token;
      this.draw();
    } catch (err) {
      replace(this.body);
      this.notice.error(humanError(err));
    }
  }

  private draw(): void {
    if (this.entries.length === 0) {
      replace(this.body, h("p", { class: "empty" }, `No entries on ${this.dayInput.value}.`));
      return;
    }
    const total = this.entries.reduce((s, e) => s + e.amountCents, 0n);
    replace(
      this.body,
      h(
        "table",
        { class: "entries" },
        h("caption", {}, `${this.entries.length} entr${this.entries.length === 1 ? "y" : "ies"} on ${this.dayInput.value}, net ${money(total)}`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Time"), h("th", { scope: "col" }, "What"), h("th", { scope: "col" }, "Task"), h("th", { scope: "col", class: "num" }, "Amount"))),
        h(
          "tbody",
          {},
          this.entries.map((e) =>
            h(
              "tr",
              { class: `kind-${EntryKind[e.kind].toLowerCase()}` },
              h("td", { "data-label": "Time" }, time(e.createdAt)),
              h("td", { "data-label": "What" }, kindNames[e.kind] ?? "—"),
              h(
                "td",
                { "data-label": "Task" },
                e.taskId
                  ? [e.jiraId ? h("span", { class: "jira" }, e.jiraId) : null, h("strong", {}, e.title), e.description ? h("div", { class: "desc" }, e.description) : null]
                  : "—",
              ),
              h("td", { "data-label": "Amount", class: `num ${e.amountCents < 0n ? "negative" : "positive"}` }, money(e.amountCents)),
            ),
          ),
        ),
      ),
    );
  }
}

class Earnings {
  readonly el: HTMLElement;
  private readonly today = h("div", { class: "stats" });
  private readonly chart = h("div", { class: "chart" });
  private readonly notice = new Notice();
  /** Empty until the server says which billing day it is: then the two weeks to it. */
  private readonly from = h("input", { type: "date", name: "earn-from" });
  private readonly to = h("input", { type: "date", name: "earn-to" });
  /** The range ends today's billing day until the user picks one. */
  private followToday = true;

  constructor() {
    const show = h("button", { type: "button", onclick: () => void this.load() }, "Show");
    for (const input of [this.from, this.to]) input.addEventListener("change", () => (this.followToday = false));
    this.el = h(
      "section",
      { class: "card", id: "earnings", "aria-labelledby": "earn-title" },
      h("h2", { id: "earn-title" }, "Management earnings"),
      this.notice.el,
      this.today,
      h("div", { class: "row filters" }, field("From", this.from), field("To", this.to), h("div", { class: "field end" }, show)),
      this.chart,
    );
  }

  async load(): Promise<void> {
    this.notice.clear();
    try {
      const res = await accounting.getManagementEarnings({ fromDay: this.from.value, toDay: this.to.value });
      const t = res.today;
      // Today's billing day is the server's (the cutoff, and a day closed early by hand,
      // move it): the default range ends there.
      if (t && this.followToday && t.billingDay !== this.to.value) {
        this.to.value = t.billingDay;
        this.from.value = addDays(t.billingDay, -13);
        return this.load();
      }
      replace(
        this.today,
        stat("Earnings today", t ? money(t.earningsCents) : "—", "earnings-today", t ? t.earningsCents < 0n : false),
        stat("Fees collected", t ? money(t.feesCents) : "—"),
        stat("Rewards paid", t ? money(t.rewardsCents) : "—"),
        h("p", { class: "meta" }, t ? `Billing day ${t.billingDay}` : ""),
      );
      replace(this.chart, barChart(res.days));
    } catch (err) {
      this.notice.error(humanError(err));
    }
  }
}

export function stat(label: string, value: string, testid?: string, negative = false): HTMLElement {
  return h("div", { class: "stat" }, h("div", { class: "label" }, label), h("div", { class: `value${negative ? " negative" : ""}`, "data-testid": testid ?? null }, value));
}

/** Per-day earnings as SVG bars: up for earnings, down for losses. */
function barChart(days: DayEarnings[]): Node {
  if (days.length === 0) return h("p", { class: "empty" }, "No days in this range.");
  const ns = "http://www.w3.org/2000/svg";
  const values = days.map((d) => Number(d.earningsCents) / 100);
  const max = Math.max(1, ...values.map(Math.abs));
  const W = Math.max(480, days.length * 44);
  const H = 180;
  const mid = values.some((v) => v < 0) ? H / 2 : H - 24;
  const scale = (values.some((v) => v < 0) ? H / 2 - 24 : H - 44) / max;
  const bw = W / days.length;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Management earnings per day, ${days[0].billingDay} to ${days[days.length - 1].billingDay}`);
  const el = (tag: string, attrs: Record<string, string | number>, text?: string) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  el("line", { x1: 0, x2: W, y1: mid, y2: mid, class: "axis" });
  days.forEach((d, i) => {
    const v = values[i];
    const hgt = Math.abs(v) * scale;
    const x = i * bw + bw * 0.15;
    const rect = el("rect", { x, y: v >= 0 ? mid - hgt : mid, width: bw * 0.7, height: Math.max(hgt, v === 0 ? 0 : 1), class: v < 0 ? "bar neg" : "bar" });
    const title = document.createElementNS(ns, "title");
    title.textContent = `${d.billingDay}: ${money(d.earningsCents)} (fees ${money(d.feesCents)}, rewards ${money(d.rewardsCents)})`;
    rect.appendChild(title);
    const every = Math.ceil(days.length / 16);
    if (i % every === 0 || i === days.length - 1) el("text", { x: i * bw + bw / 2, y: H - 6, "text-anchor": "middle", class: "tick" }, shortDay(d.billingDay));
  });
  const table = h(
    "table",
    { class: "sr-only" },
    h("caption", {}, "Management earnings per day"),
    h("tbody", {}, days.map((d) => h("tr", {}, h("th", { scope: "row" }, d.billingDay), h("td", {}, money(d.earningsCents))))),
  );
  return h("div", {}, svg as unknown as Node, table);
}

function closeDaySection(after: () => void): HTMLElement {
  const notice = new Notice();
  const btn = h("button", { type: "button", class: "danger" }, "Close the day");
  btn.addEventListener("click", async () => {
    notice.clear();
    let result = "";
    const ok = await confirmDialog({
      title: "Close the billing day?",
      body: "Every positive balance is paid out now (and the popug gets an e-mail); zero and negative balances carry over. New entries go to the next day.",
      confirm: "Close the day",
      onConfirm: async () => {
        const res = await accounting.closeDay({});
        const n = Number(res.payouts);
        result = res.closedNow
          ? `Closed ${res.billingDay}: paid ${money(res.paidCents)} to ${n} popug${n === 1 ? "" : "s"}.`
          : `${res.billingDay} was already closed (${n} payout${n === 1 ? "" : "s"}, ${money(res.paidCents)}).`;
        return result;
      },
    });
    if (ok) {
      notice.ok(result);
      after();
    }
  });
  return h(
    "section",
    { class: "card", id: "close-day", "aria-labelledby": "close-title" },
    h("h2", { id: "close-title" }, "Close the day"),
    h("p", {}, "Normally the day closes by itself at the end of the billing day. Close it now by hand:"),
    btn,
    notice.el,
  );
}

/**
 * Everyone's balances: admins get the list of accounts (ListAccounts, accounts.manage);
 * accountants look a popug up by id — GetBalance and ListEntries take anyone's id with
 * accounting.read_all, but no RPC an accountant may call lists every popug (see
 * web/README.md).
 */
class Everyone {
  readonly el: HTMLElement;
  private readonly body = h("div", { class: "list" });
  private readonly notice = new Notice();

  constructor(private readonly onLog: (id: string, label: string) => void) {
    const parts: Node[] = [h("h2", { id: "all-title" }, "Popugs' balances"), this.notice.el];
    if (!mayCall(AccountService.method.listAccounts)) {
      const input = h("input", { name: "popug-id", placeholder: "account id (UUID)", autocomplete: "off", spellcheck: "false" });
      const go = h("button", { type: "submit" }, "Show balance and log");
      const form = h("form", { class: "row filters" }, field("Popug id", input, "The popug's account id (a UUID)."), h("div", { class: "field end" }, go));
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        await busy(go, () => this.lookup(input.value.trim()));
      });
      parts.push(form);
    } else {
      parts.push(h("button", { type: "button", onclick: () => void this.load() }, "Refresh"));
    }
    parts.push(this.body);
    this.el = h("section", { class: "card", id: "balances", "aria-labelledby": "all-title" }, ...parts);
  }

  async load(): Promise<void> {
    if (!mayCall(AccountService.method.listAccounts)) return;
    this.notice.clear();
    try {
      const all = await allAccounts();
      const balances = await Promise.all(
        all.map((a) => accounting.getBalance({ userId: a.id }).then((b) => b.balanceCents, () => null)),
      );
      replace(
        this.body,
        h(
          "table",
          { class: "balances" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Popug"), h("th", { scope: "col" }, "Role"), h("th", { scope: "col", class: "num" }, "Balance"), h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
          h(
            "tbody",
            {},
            all.map((a, i) => {
              const b = balances[i];
              const label = `${a.name} ${a.surname} (${a.username})`;
              return h(
                "tr",
                { "data-username": a.username, "data-account-id": a.id },
                h("td", { "data-label": "Popug" }, label, a.active ? null : h("span", { class: "badge" }, " inactive")),
                h("td", { "data-label": "Role" }, roleNames[a.role]),
                h("td", { "data-label": "Balance", class: `num ${b !== null && b < 0n ? "negative" : ""}`, "data-testid": `balance-${a.username}` }, b === null ? "—" : money(b)),
                h("td", {}, h("button", { type: "button", class: "link", "aria-label": `Audit log of ${a.username}`, onclick: () => this.onLog(a.id, label) }, "Audit log")),
              );
            }),
          ),
        ),
      );
    } catch (err) {
      this.notice.error(humanError(err));
    }
  }

  private async lookup(id: string): Promise<void> {
    this.notice.clear();
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) {
      this.notice.error("Please enter an account id (a UUID like 0c6f…-…).");
      return;
    }
    try {
      const [b] = await Promise.all([accounting.getBalance({ userId: id }), profiles([id]).catch(() => undefined)]);
      const label = displayName(id);
      replace(
        this.body,
        h("p", {}, `${label}: `, h("strong", { "data-testid": "lookup-balance" }, money(b.balanceCents)), ` on ${b.billingDay}`),
      );
      this.onLog(id, label);
    } catch (err) {
      this.notice.error(humanError(err));
    }
  }
}
