// Analytics (admins): earnings today, how many popugs are negative, the most expensive task
// of a day / week / month / range.
import { analytics } from "../api.js";
import { busy, field, h, Notice, replace } from "../dom.js";
import { humanError } from "../errors.js";
import { money, shortDay } from "../format.js";
import { Period } from "../gen/popug/analytics/v1/analytics_pb.js";
import { displayName, profiles } from "../people.js";
import { stat } from "./accounting.js";

export function analyticsPage(main: HTMLElement): void {
  const dashNotice = new Notice();
  const dash = h("div", { class: "stats" }, "…");
  const refresh = h("button", { type: "button" }, "Refresh");
  const loadDash = async () => {
    dashNotice.clear();
    try {
      const d = await analytics.getDashboard({});
      replace(
        dash,
        stat("Management earnings today", money(d.managementEarningsCents), "analytics-earnings", d.managementEarningsCents < 0n),
        stat("Popugs with a negative balance", String(d.negativeBalancePopugs), "analytics-negative"),
        h("p", { class: "meta" }, `Billing day ${d.billingDay}`),
      );
      // Today's billing day is the server's: the default of every day input.
      for (const input of [day, from, to]) if (!input.value) input.value = d.billingDay;
    } catch (err) {
      replace(dash);
      dashNotice.error(humanError(err));
    }
  };
  refresh.addEventListener("click", () => void busy(refresh, loadDash));

  // --- most expensive task ---
  const notice = new Notice();
  const period = h(
    "select",
    { name: "period" },
    h("option", { value: String(Period.DAY) }, "Day"),
    h("option", { value: String(Period.WEEK) }, "Week"),
    h("option", { value: String(Period.MONTH) }, "Month"),
    h("option", { value: String(Period.CUSTOM) }, "Range"),
  );
  // Empty until the dashboard says which billing day it is (an empty day asks for today).
  const day = h("input", { type: "date", name: "day" });
  const from = h("input", { type: "date", name: "from" });
  const to = h("input", { type: "date", name: "to" });
  const dayField = field("Day", day, "Any day inside the period");
  const fromField = field("From", from);
  const toField = field("To", to);
  const result = h("div", { class: "result", "aria-live": "polite", "data-testid": "expensive-result" });
  const show = h("button", { type: "submit", class: "primary" }, "Show");
  const sync = () => {
    const custom = Number(period.value) === Period.CUSTOM;
    dayField.hidden = custom;
    fromField.hidden = !custom;
    toField.hidden = !custom;
  };
  period.addEventListener("change", sync);
  sync();
  const loadExpensive = async () => {
    notice.clear();
    const p = Number(period.value) as Period;
    try {
      const res = await analytics.getMostExpensiveTask(
        p === Period.CUSTOM ? { period: p, fromDay: from.value, toDay: to.value } : { period: p, day: day.value },
      );
      const range = res.fromDay === res.toDay ? shortDay(res.fromDay) : `${shortDay(res.fromDay)}–${shortDay(res.toDay)}`;
      const t = res.task;
      if (!t) {
        replace(result, h("p", {}, `${range}: no task was completed in this period.`));
        return;
      }
      await profiles([t.assigneeId]).catch(() => undefined);
      replace(
        result,
        h("p", { class: "big" }, `${range}: ${money(t.rewardCents)}`),
        h("p", {}, t.jiraId ? h("span", { class: "jira" }, t.jiraId) : null, h("strong", {}, t.title)),
        t.description ? h("p", { class: "desc" }, t.description) : null,
        h("p", { class: "meta" }, `Completed ${t.completedDay} by ${displayName(t.assigneeId)}`),
      );
    } catch (err) {
      replace(result);
      notice.error(humanError(err));
    }
  };
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "exp-title" },
    h("h2", { id: "exp-title" }, "Most expensive task"),
    h("div", { class: "row filters" }, field("Period", period), dayField, fromField, toField, h("div", { class: "field end" }, show)),
    notice.el,
    result,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void busy(show, loadExpensive);
  });

  replace(
    main,
    h("h1", {}, "Analytics"),
    h("section", { class: "card", "aria-labelledby": "dash-title" }, h("h2", { id: "dash-title" }, "Today"), dashNotice.el, dash, refresh),
    form,
  );
  void loadDash().then(loadExpensive);
}
