// PopugJira in the browser: a tiny path router, role-aware navigation, the pages.
import "./style.css";
import type { DescMethod } from "@bufbuild/protobuf";
import { logout, mayCall, onSessionChange, session } from "./api.js";
import { AccountService } from "./gen/popug/account/v1/account_pb.js";
import { AccountingService } from "./gen/popug/accounting/v1/accounting_pb.js";
import { AnalyticsService } from "./gen/popug/analytics/v1/analytics_pb.js";
import { TaskService } from "./gen/popug/tasks/v1/tasks_pb.js";
import { h, replace } from "./dom.js";
import { loginPage } from "./pages/login.js";
import { tasksPage } from "./pages/tasks.js";
import { accountingPage } from "./pages/accounting.js";
import { analyticsPage } from "./pages/analytics.js";
import { accountsPage } from "./pages/accounts.js";

interface Route {
  path: string;
  title: string;
  /** The page opens for whoever may call this RPC (its policy in proto/). */
  needs: DescMethod;
  render: (main: HTMLElement) => void | Promise<void>;
}

const routes: Route[] = [
  { path: "/tasks", title: "Tasks", needs: TaskService.method.listTasks, render: tasksPage },
  { path: "/accounting", title: "Accounting", needs: AccountingService.method.getBalance, render: accountingPage },
  { path: "/analytics", title: "Analytics", needs: AnalyticsService.method.getDashboard, render: analyticsPage },
  { path: "/accounts", title: "Accounts", needs: AccountService.method.listAccounts, render: accountsPage },
];

const app = document.getElementById("app")!;
let flash: string | null = null;

export function navigate(path: string, replaceState = false): void {
  if (location.pathname !== path) {
    if (replaceState) history.replaceState(null, "", path);
    else history.pushState(null, "", path);
  }
  render();
}

function allowed(r: Route): boolean {
  return mayCall(r.needs);
}

function render(): void {
  const s = session();
  const path = location.pathname.replace(/\/+$/, "") || "/";
  if (!s) {
    if (path !== "/login") history.replaceState(null, "", `/login${path !== "/" ? `?next=${encodeURIComponent(path)}` : ""}`);
    document.title = "Sign in · PopugJira";
    const message = flash;
    flash = null;
    loginPage(app, message, () => {
      const next = new URLSearchParams(location.search).get("next");
      navigate(next && next.startsWith("/") ? next : "/tasks", true);
    });
    return;
  }
  if (path === "/" || path === "/login") {
    navigate("/tasks", true);
    return;
  }
  const route = routes.find((r) => r.path === path);
  const main = h("main", { id: "main", tabindex: "-1" });
  const nav = h(
    "nav",
    { "aria-label": "Main" },
    h(
      "ul",
      {},
      routes.filter(allowed).map((r) =>
        h(
          "li",
          {},
          h(
            "a",
            {
              href: r.path,
              "aria-current": r === route ? "page" : null,
              onclick: (e: Event) => {
                e.preventDefault();
                navigate(r.path);
              },
            },
            r.title,
          ),
        ),
      ),
    ),
  );
  const who = s.claims;
  const header = h(
    "header",
    { class: "top" },
    h("a", { class: "brand", href: "/tasks", onclick: (e: Event) => (e.preventDefault(), navigate("/tasks")) }, h("span", { class: "logo", "aria-hidden": "true" }), "PopugJira"),
    nav,
    h(
      "div",
      { class: "me" },
      h("span", { class: "who", "data-testid": "whoami" }, `${who.name || who.username} · `, h("span", { class: "role" }, who.role)),
      h("button", { type: "button", class: "link", onclick: () => void logout() }, "Sign out"),
    ),
  );
  replace(app, h("a", { class: "skip", href: "#main" }, "Skip to content"), header, main);
  if (!route) {
    document.title = "Not found · PopugJira";
    replace(main, h("h1", {}, "Page not found"), h("p", {}, "There is no such page. Use the menu above."));
    return;
  }
  document.title = `${route.title} · PopugJira`;
  if (!allowed(route)) {
    replace(
      main,
      h("h1", {}, "No access"),
      h("p", { role: "alert", class: "notice error" }, `Your role (${who.role}) cannot open ${route.title}. Ask an admin if you need it.`),
    );
    return;
  }
  void route.render(main);
}

onSessionChange((s, reason) => {
  if (!s) {
    flash = reason === "expired" ? "Your session has ended. Please sign in again." : reason === "signed-out" ? "You are signed out." : null;
    render();
  }
});
window.addEventListener("popstate", render);
render();
