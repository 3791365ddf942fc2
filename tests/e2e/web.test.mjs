// The web client in headless Chromium against the real mesh (started by tests/e2e.sh):
// every role signs in and does its job. Screenshots go to $E2E_ARTIFACTS.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

// playwright-core is a devDependency of web/ (no browser download: Debian's chromium).
const require = createRequire(new URL("../../web/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const BASE = process.env.E2E_BASE_URL ?? "http://127.0.0.1:27080";
const ARTIFACTS = process.env.E2E_ARTIFACTS ?? new URL("../artifacts", import.meta.url).pathname;
const ADMIN_PASSWORD = process.env.E2E_ADMIN_PASSWORD ?? "popug-admin";
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

mkdirSync(ARTIFACTS, { recursive: true });
let browser;
const contexts = [];
const pageErrors = [];
/** What the scenarios leave for the later ones. */
const state = { completed: [] };

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
});

async function newPage(viewport = DESKTOP) {
  const context = await browser.newContext({ viewport });
  contexts.push(context);
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on("pageerror", (err) => pageErrors.push(`${page.url()}: ${err.message}`));
  return page;
}

const password = (username) => (username === "admin" ? ADMIN_PASSWORD : `popug-${username}`);

async function login(username, viewport) {
  const page = await newPage(viewport);
  await page.goto(`${BASE}/login`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password(username));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { level: 1, name: "Tasks" }).waitFor();
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** Retries `check` (which throws until satisfied) for up to `ms`. */
async function eventually(check, ms = 20_000, step = 500) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, step));
    }
  }
}

async function navTo(page, name) {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name }).click();
  await page.getByRole("heading", { level: 1, name }).waitFor();
}

async function navLinks(page) {
  return page.getByRole("navigation", { name: "Main" }).getByRole("link").allTextContents();
}

/** Creates a task in the UI (retrying while TaskKeeper has not learned the users yet);
 *  returns its number, title and the assignee's username. */
async function createTask(page, title, jiraId = "", description = "") {
  const form = page.getByRole("form", { name: "New task" });
  return eventually(async () => {
    await form.getByLabel("Title").fill(title);
    await form.getByLabel("Jira id").fill(jiraId);
    await form.getByLabel("Description").fill(description);
    await form.getByRole("button", { name: "Create task" }).click();
    const notice = form.locator(".notice:not([hidden])");
    await notice.waitFor();
    const text = await notice.textContent();
    const m = /^Task #(\d+) ".*" created and assigned to (.+)\.$/.exec(text);
    if (!m) throw new Error(`create task: ${text}`);
    // "Name Surname (username)"; only a short id when names cannot be looked up.
    const assignee = /\(([a-z][a-z0-9_.-]*)\)$/.exec(m[2])?.[1] ?? null;
    return { number: m[1], title, jiraId, description, assignee };
  });
}

const ASSIGNABLE = ["worker1", "worker2", "worker3", "worker4", "worker5", "accountant"];

/** The assignee signs in (with the demo password) and completes the task. When the page
 *  could not name the assignee, each assignable demo user looks for it among their tasks. */
async function completeAsAssignee(task, shotName) {
  let page;
  let complete;
  for (const user of task.assignee ? [task.assignee] : ASSIGNABLE) {
    page = await login(user);
    await page.locator("#my-tasks .list:not([aria-busy])").waitFor();
    complete = page.locator("#my-tasks").getByRole("button", { name: `Complete task #${task.number} ${task.title}` });
    if ((await complete.count()) > 0) {
      task.assignee = user;
      break;
    }
    await page.context().close();
  }
  assert.ok(task.assignee, `nobody has task #${task.number}`);
  const mine = page.locator("#my-tasks");
  await complete.click();
  await mine.getByRole("status").filter({ hasText: `Task #${task.number} "${task.title}" is done` }).waitFor();
  await mine.getByLabel("Status").selectOption({ label: "Done" });
  await mine.locator("li.task.done", { hasText: task.title }).waitFor();
  if (shotName) await shot(page, shotName);
  state.completed.push(task);
  return page;
}

/** A grpc-web call made with the page's own token, bypassing the UI: its grpc-status. */
async function rawCallStatus(page, path) {
  return page.evaluate(async (path) => {
    const s = JSON.parse(localStorage.getItem("popugjira.session"));
    const res = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", authorization: `Bearer ${s.accessToken}` },
      body: new Uint8Array(5),
    });
    let status = res.headers.get("grpc-status");
    const buf = new Uint8Array(await res.arrayBuffer());
    for (let i = 0; status === null && i + 5 <= buf.length; ) {
      const len = (buf[i + 1] << 24) | (buf[i + 2] << 16) | (buf[i + 3] << 8) | buf[i + 4];
      if (buf[i] & 0x80) status = /grpc-status:\s*(\d+)/.exec(new TextDecoder().decode(buf.slice(i + 5, i + 5 + len)))?.[1] ?? null;
      i += 5 + len;
    }
    return Number(status);
  }, path);
}

const PERMISSION_DENIED = 7;
const cents = (text) => Math.round(Number(text.replace("−", "-").replace(/[$,]/g, "")) * 100);
const MONEY = String.raw`−?\$\d+\.\d\d`;
const PRICE = new RegExp(`^fee ${MONEY} · reward ${MONEY}$`);

/** Counts the page's calls of each RPC (by "Service/Method"). */
function countCalls(page) {
  const calls = new Map();
  page.on("request", (r) => {
    const m = /\/popug\.[a-z]+\.v1\.([A-Za-z]+\/[A-Za-z]+)$/.exec(new URL(r.url()).pathname);
    if (m) calls.set(m[1], (calls.get(m[1]) ?? 0) + 1);
  });
  return (rpc) => calls.get(rpc) ?? 0;
}

/** A process's state letter ("Z": exited, not reaped yet), parent pid and name; null when gone. */
function procStat(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { state, ppid: Number(ppid), comm: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")) };
  } catch {
    return null;
  }
}

/** The Accounting process tests/e2e.sh started for this run (tests/mesh.sh exports its
 *  address as MONEY_ADDR): a child of one of this test's ancestors, serving on that
 *  address. Null when there is none (a mesh started some other way). */
function meshAccountingPid() {
  const addr = process.env.MONEY_ADDR;
  if (!addr || process.platform !== "linux") return null;
  const ancestors = new Set();
  for (let pid = process.pid; pid > 1 && !ancestors.has(pid); pid = procStat(pid)?.ppid ?? 0) ancestors.add(pid);
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const st = procStat(entry);
    if (!st || st.comm !== "accounting" || st.state === "Z" || !ancestors.has(st.ppid)) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, "utf8").split("\0").includes(`ACCOUNTING__GRPC_ADDR=${addr}`)) return Number(entry);
    } catch {
      // Not ours to read.
    }
  }
  return null;
}

// ------------------------------------------------------------------------------------------

test("sign-in: a wrong password is explained; signing out returns to the login page", async () => {
  const page = await newPage();
  await page.goto(`${BASE}/tasks`);
  await page.getByRole("heading", { name: "Sign in to PopugJira" }).waitFor();
  await page.getByLabel("Username").fill("worker1");
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "Wrong username or password" }).waitFor();
  await shot(page, "01-login-error");
  await page.getByLabel("Password").fill("popug-worker1");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { level: 1, name: "Tasks" }).waitFor();
  assert.match(await page.getByTestId("whoami").textContent(), /worker/);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in to PopugJira" }).waitFor();
  await page.getByText("You are signed out.").waitFor();
  await page.goto(`${BASE}/accounting`);
  await page.getByRole("heading", { name: "Sign in to PopugJira" }).waitFor();
});

test("worker: creates a task (server validation shown), the random assignee completes it", async () => {
  const page = await login("worker1");
  const form = page.getByRole("form", { name: "New task" });
  await form.getByLabel("Title").fill("[UBERPOP-1] - old style");
  const creating = (() => {
    const keys = [];
    page.on("request", (r) => {
      if (r.url().endsWith("/popug.tasks.v1.TaskService/CreateTask")) keys.push(r.headers()["idempotency-key"]);
    });
    return keys;
  })();
  await form.getByRole("button", { name: "Create task" }).click();
  const alert = form.getByRole("alert");
  await alert.waitFor();
  assert.match(await alert.textContent(), /Please check your input — Title/);
  // The violation (google.rpc.BadRequest) stands under its field, which it describes.
  const title = form.getByLabel("Title");
  assert.equal(await title.getAttribute("aria-invalid"), "true");
  const titleError = form.locator(`#${await title.getAttribute("id")}-error`);
  assert.match(await titleError.textContent(), /\[|bracket|jira/i);
  assert.match(await title.getAttribute("aria-describedby"), /-error\b/);
  await shot(page, "02-task-validation");
  await title.fill("Feed the parrots");
  await form.getByLabel("Jira id").fill("not a key");
  await form.getByRole("button", { name: "Create task" }).click();
  await form.getByRole("alert").filter({ hasText: "Jira id" }).waitFor();
  const jira = form.getByLabel("Jira id");
  assert.equal(await jira.getAttribute("aria-invalid"), "true");
  assert.equal(await title.getAttribute("aria-invalid"), null, "the fixed title is no longer blamed");
  assert.equal(await titleError.count(), 0);
  await form.locator(`#${await jira.getAttribute("id")}-error`).waitFor();
  // Each submit carried its own idempotency key.
  assert.equal(creating.length, 2);
  assert.ok(creating.every((k) => /^[0-9a-f]{32}$/.test(k ?? "")), String(creating));
  assert.notEqual(creating[0], creating[1]);

  const task = await createTask(page, "Feed the parrots", "UBERPOP-42", "Twice a day, sunflower seeds only");
  await shot(page, "03-task-created");
  const done = await completeAsAssignee(task, "04-task-completed");
  assert.ok(ASSIGNABLE.includes(task.assignee), task.assignee);
  // Someone else cannot see it among their own tasks.
  assert.equal(await done.locator("#all-tasks").count(), 0, "an assignee has no 'All tasks'");
});

test("accountant: sees management earnings today and the per-day chart", async () => {
  const page = await login("accountant");
  assert.deepEqual(await navLinks(page), ["Tasks", "Accounting"]);
  await navTo(page, "Accounting");
  const earnings = page.locator("#earnings");
  await eventually(async () => {
    await earnings.getByRole("button", { name: "Show" }).click();
    const fees = await earnings.locator(".stat", { hasText: "Fees collected" }).locator(".value").textContent();
    assert.ok(cents(fees) > 0, `fees collected today: ${fees}`);
  });
  const today = await page.getByTestId("earnings-today").textContent();
  assert.match(today, /^−?\$\d+\.\d\d$/);
  await earnings.getByRole("img", { name: /Management earnings per day/ }).waitFor();
  // An accountant looks a popug up by id: their own (from the token) works like anyone's.
  const me = await page.evaluate(() => JSON.parse(localStorage.getItem("popugjira.session")).claims.sub);
  await page.getByLabel("Popug id").fill(me);
  await page.getByRole("button", { name: "Show balance and log" }).click();
  await page.getByTestId("lookup-balance").waitFor();
  await page.getByRole("heading", { name: /^Audit log of / }).waitFor();
  await shot(page, "05-accountant-earnings");
});

test("admin: closes the day by hand and sees the payout in the audit log", async () => {
  const page = await login("admin");
  assert.deepEqual(await navLinks(page), ["Tasks", "Accounting", "Analytics", "Accounts"]);
  await navTo(page, "Accounting");
  const balances = page.locator("#balances");
  // Wait until Accounting has booked the completion: someone is in the plus.
  let winner;
  await eventually(async () => {
    await balances.getByRole("button", { name: "Refresh" }).click();
    await balances.locator("tbody tr").first().waitFor();
    for (const row of await balances.locator("tbody tr").all()) {
      const amount = await row.locator("td.num").textContent();
      if (cents(amount) > 0) winner = { username: await row.getAttribute("data-username"), amount };
    }
    if (!winner) {
      // A fee equal to the reward leaves zero: one more task settles it.
      const creator = await login("worker5");
      const task = await createTask(creator, `Top up ${Date.now()}`, "UBERPOP-7", "so that someone earns");
      await creator.context().close();
      await (await completeAsAssignee(task)).context().close();
      throw new Error("nobody has a positive balance yet");
    }
  }, 40_000, 1000);
  await shot(page, "06-admin-balances");

  await page.getByRole("button", { name: "Close the day" }).click();
  const dialog = page.getByRole("dialog", { name: "Close the billing day?" });
  await dialog.getByRole("button", { name: "Close the day" }).click();
  const result = dialog.getByRole("status");
  await result.waitFor();
  const text = await result.textContent();
  const m = /^Closed (\d{4}-\d\d-\d\d): paid \$([\d.]+) to (\d+) popugs?\.$/.exec(text);
  assert.ok(m, `close day said: ${text}`);
  assert.ok(Number(m[3]) >= 1);
  await shot(page, "07-admin-close-day");
  await dialog.getByRole("button", { name: "Close" }).click();

  await balances.getByRole("button", { name: `Audit log of ${winner.username}` }).click();
  const log = page.locator("#audit-log");
  await log.getByRole("heading", { name: new RegExp(`Audit log of .*\\(${winner.username}\\)`) }).waitFor();
  await log.getByLabel("Billing day").fill(m[1]);
  await log.getByLabel("Billing day").dispatchEvent("change");
  const payout = log.locator("tbody tr", { hasText: "Payout" });
  await payout.waitFor();
  assert.equal(cents(await payout.locator("td.num").textContent()), -cents(winner.amount));
  // The entries carry their task: jira id, title and description.
  const fee = log.locator("tbody tr", { hasText: "Assignment fee" }).first();
  assert.ok((await fee.textContent()).length > 0);
  await log.scrollIntoViewIfNeeded();
  await shot(page, "08-admin-payout-in-audit-log");
  // Paid out: the winner's balance is zero now.
  await balances.getByRole("button", { name: "Refresh" }).click();
  await eventually(async () => assert.equal(await page.getByTestId(`balance-${winner.username}`).textContent(), "$0.00"));
});

test("accountant: sees any popug's balance (looked up by account id), as the admin does", async () => {
  // What the admin's list says (ListAccounts + GetBalance): every popug, with its id.
  const admin = await login("admin");
  await navTo(admin, "Accounting");
  const rows = admin.locator("#balances tbody tr");
  await rows.first().waitFor();
  const popugs = [];
  for (const row of await rows.all()) {
    popugs.push({
      username: await row.getAttribute("data-username"),
      id: await row.getAttribute("data-account-id"),
      balance: await row.locator("td.num").textContent(),
    });
  }
  await admin.context().close();
  assert.ok(popugs.filter((p) => p.username.startsWith("worker")).length >= 5, JSON.stringify(popugs));

  // The accountant may call GetBalance and ListEntries for anyone (accounting.read_all) and
  // ListProfiles for names; there is no RPC an accountant may call that lists every popug,
  // so the page looks each one up by id. It never asks for the admins' ListAccounts.
  const page = await login("accountant");
  const calls = countCalls(page);
  await navTo(page, "Accounting");
  const balances = page.locator("#balances");
  for (const p of popugs) {
    if (!/\$/.test(p.balance)) continue; // the admin's list could not read it either
    await balances.getByLabel("Popug id").fill(p.id);
    await balances.getByRole("button", { name: "Show balance and log" }).click();
    const line = balances.locator("p", { hasText: `(${p.username}):` });
    await line.waitFor();
    assert.equal(await line.getByTestId("lookup-balance").textContent(), p.balance, p.username);
    await page.locator("#audit-log").getByRole("heading", { name: new RegExp(`^Audit log of .*\\(${p.username}\\)$`) }).waitFor();
  }
  await shot(page, "08b-accountant-popug-balance");
  assert.equal(calls("AccountService/ListAccounts"), 0);
  assert.equal(await page.getByRole("alert").count(), 0);
});

test("admin: analytics show earnings, negative popugs and the most expensive task", async () => {
  const page = await login("admin");
  await navTo(page, "Analytics");
  await page.getByTestId("analytics-earnings").waitFor();
  assert.match(await page.getByTestId("analytics-negative").textContent(), /^\d+$/);
  const form = page.getByRole("form", { name: "Most expensive task" });
  const result = page.getByTestId("expensive-result");
  // The day inputs start at the server's billing day, which the admin's early close
  // above moved to tomorrow; the tasks were completed (and billed) on today's date.
  const today = new Date().toISOString().slice(0, 10);
  for (const label of ["Day", "Week", "Month"]) {
    await form.getByLabel("Period").selectOption({ label });
    await form.getByLabel("Day", { exact: true }).fill(today);
    await form.getByRole("button", { name: "Show" }).click();
    await eventually(async () => {
      const text = await result.textContent();
      assert.match(text, /\$\d+\.\d\d/, `${label}: ${text}`);
      assert.ok(state.completed.some((t) => text.includes(t.title)), `${label}: ${text}`);
    });
  }
  await form.getByLabel("Period").selectOption({ label: "Range" });
  await form.getByLabel("From").fill(today);
  await form.getByLabel("To").fill(today);
  await form.getByRole("button", { name: "Show" }).click();
  await eventually(async () => assert.match(await result.textContent(), /\d\d\.\d\d: \$\d+\.\d\d/));
  await shot(page, "09-admin-analytics");
});

test("manager: sees all tasks with filters and reassigns the open ones", async () => {
  const page = await login("manager");
  assert.deepEqual(await navLinks(page), ["Tasks", "Accounting"]);
  await createTask(page, "Sweep the perches", "UBERPOP-43", "before lunch");
  const all = page.locator("#all-tasks");
  await all.locator("li.task", { hasText: "Sweep the perches" }).waitFor();
  await all.getByLabel("Status").selectOption({ label: "Open" });
  await eventually(async () => {
    assert.equal(await all.locator("li.task.done").count(), 0, "the Open filter shows no done task");
    assert.ok((await all.locator("li.task.open", { hasText: "Sweep the perches" }).count()) > 0);
  });
  await page.getByRole("button", { name: "Reassign open tasks" }).click();
  const dialog = page.getByRole("dialog", { name: "Reassign open tasks?" });
  await dialog.getByRole("button", { name: "Reassign" }).click();
  const result = dialog.getByRole("status");
  await result.waitFor();
  const m = /^Reassigned (\d+) open tasks?\.$/.exec(await result.textContent());
  assert.ok(m && Number(m[1]) >= 1, await result.textContent());
  await shot(page, "10-manager-reassigned");
  await dialog.getByRole("button", { name: "Close" }).click();
  await page.getByRole("status").filter({ hasText: `Reassigned ${m[1]} open task` }).waitFor();
  // Filter by an assignee: every row shown is theirs.
  await all.getByLabel("Status").selectOption({ label: "Any status" });
  const assignee = all.getByLabel("Assignee");
  await eventually(async () => assert.ok((await assignee.locator("option").count()) > 1));
  const option = assignee.locator("option").nth(1);
  const name = await option.textContent();
  await assignee.selectOption({ index: 1 });
  await eventually(async () => {
    const rows = await all.locator("li.task .meta").allTextContents();
    assert.ok(rows.length > 0 && rows.every((r) => r.includes(name)), rows.join(" | "));
  });
  await shot(page, "11-manager-all-tasks-filtered");
});

test("admin: creates a user, changes the role, deactivates", async () => {
  const page = await login("admin");
  await navTo(page, "Accounts");
  const form = page.getByRole("form", { name: "New user" });
  const username = `kesha${Date.now() % 100000}`;
  await form.getByLabel("Username").fill(username);
  await form.getByLabel("E-mail").fill(`${username}@popug.example`);
  await form.getByLabel("Name", { exact: true }).fill("Kesha");
  await form.getByLabel("Surname").fill("Popugaev");
  await form.getByLabel("Role").selectOption({ label: "worker" });
  await form.getByLabel("Password").fill("short");
  await form.getByRole("button", { name: "Create user" }).click();
  await form.getByRole("alert").filter({ hasText: "Password" }).waitFor();
  await form.getByLabel("Password").fill("kesha-password");
  await form.getByRole("button", { name: "Create user" }).click();
  await form.getByRole("status").filter({ hasText: `Created ${username} (worker)` }).waitFor();
  const row = page.locator(`tr[data-username="${username}"]`);
  await row.waitFor();
  await row.getByLabel(`Role of ${username}`).selectOption({ label: "accountant" });
  await page.getByRole("status").filter({ hasText: `${username} is now accountant` }).waitFor();
  await row.getByRole("button", { name: `Deactivate ${username}` }).click();
  const dialog = page.getByRole("dialog", { name: `Deactivate ${username}?` });
  await dialog.getByRole("button", { name: "Deactivate" }).click();
  await page.getByRole("status").filter({ hasText: `${username} is deactivated` }).waitFor();
  await row.getByText("deactivated").waitFor();
  await shot(page, "12-admin-accounts");
  // The deactivated user cannot sign in.
  const other = await newPage();
  await other.goto(`${BASE}/login`);
  await other.getByLabel("Username").fill(username);
  await other.getByLabel("Password").fill("kesha-password");
  await other.getByRole("button", { name: "Sign in" }).click();
  await other.getByRole("alert").filter({ hasText: "Wrong username or password" }).waitFor();
});

test("worker: cannot reach admin pages or data", async () => {
  const page = await login("worker2");
  assert.deepEqual(await navLinks(page), ["Tasks", "Accounting"]);
  assert.equal(await page.locator("#all-tasks").count(), 0);
  assert.equal(await page.getByRole("button", { name: "Reassign open tasks" }).count(), 0);
  for (const [path, title] of [["/accounts", "Accounts"], ["/analytics", "Analytics"]]) {
    await page.goto(`${BASE}${path}`);
    await page.getByRole("heading", { level: 1, name: "No access" }).waitFor();
    await page.getByRole("alert").filter({ hasText: `cannot open ${title}` }).waitFor();
  }
  await shot(page, "13-worker-no-access");
  await page.goto(`${BASE}/accounting`);
  await page.getByRole("heading", { level: 1, name: "Accounting" }).waitFor();
  await page.getByRole("heading", { name: "My balance" }).waitFor();
  for (const h of ["Management earnings", "Popugs' balances", "Close the day"]) {
    assert.equal(await page.getByRole("heading", { name: h }).count(), 0, `a worker sees "${h}"`);
  }
  await shot(page, "14-worker-accounting");
  // And the server agrees, whatever a client asks for.
  for (const rpc of [
    "popug.account.v1.AccountService/ListAccounts",
    "popug.tasks.v1.TaskService/ReassignOpenTasks",
    "popug.accounting.v1.AccountingService/GetManagementEarnings",
    "popug.accounting.v1.AccountingService/CloseDay",
    "popug.analytics.v1.AnalyticsService/GetDashboard",
  ]) {
    assert.equal(await rawCallStatus(page, `/${rpc}`), PERMISSION_DENIED, rpc);
  }
});

test("phone width: the task board and the menu fit a 390 px screen", async () => {
  const page = await login("worker3", PHONE);
  await page.locator("#my-tasks .list:not([aria-busy])").waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  await shot(page, "15-phone-tasks");
  await navTo(page, "Accounting");
  await page.getByRole("heading", { name: "My balance" }).waitFor();
  const overflow2 = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow2 <= 0, `accounting is ${overflow2}px wider than the screen`);
  await shot(page, "16-phone-accounting");
});

test("session: an expiring token is refreshed silently; a refused one returns to login", async () => {
  const page = await login("worker4");
  const before = await page.evaluate(() => JSON.parse(localStorage.getItem("popugjira.session")));
  // Pretend the access token is about to expire: the next call refreshes first.
  await page.evaluate(() => {
    const s = JSON.parse(localStorage.getItem("popugjira.session"));
    s.expiresAt = Date.now() + 5_000;
    localStorage.setItem("popugjira.session", JSON.stringify(s));
  });
  await page.reload();
  await page.getByRole("heading", { level: 1, name: "Tasks" }).waitFor();
  await page.locator("#my-tasks .list:not([aria-busy])").waitFor();
  const afterRefresh = await eventually(async () => {
    const s = await page.evaluate(() => JSON.parse(localStorage.getItem("popugjira.session")));
    assert.notEqual(s.refreshToken, before.refreshToken, "the refresh token rotated");
    return s;
  });
  assert.ok(afterRefresh.expiresAt > Date.now() + 60_000);
  assert.equal(await page.locator("#my-tasks").getByRole("alert").count(), 0);
  // An access token the gateway refuses (UNAUTHENTICATED), with a good refresh token:
  // refreshed once and the call retried, the user never notices.
  await page.evaluate(() => {
    const s = JSON.parse(localStorage.getItem("popugjira.session"));
    s.accessToken = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
    localStorage.setItem("popugjira.session", JSON.stringify(s));
  });
  await page.reload();
  await page.locator("#my-tasks .list:not([aria-busy])").waitFor();
  assert.equal(await page.getByRole("heading", { name: "Sign in to PopugJira" }).count(), 0);
  assert.equal(await page.locator("#my-tasks").getByRole("alert").count(), 0);
  const renewed = await page.evaluate(() => JSON.parse(localStorage.getItem("popugjira.session")));
  assert.notEqual(renewed.refreshToken, afterRefresh.refreshToken, "refreshed after UNAUTHENTICATED");
  // A token the server refuses, with a refresh token that is no good: back to login.
  await page.evaluate(() => {
    const s = JSON.parse(localStorage.getItem("popugjira.session"));
    s.accessToken = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
    s.refreshToken = "spent";
    localStorage.setItem("popugjira.session", JSON.stringify(s));
  });
  await page.reload();
  await page.getByRole("heading", { name: "Sign in to PopugJira" }).waitFor();
  await page.getByText("Your session has ended. Please sign in again.").waitFor();
  await shot(page, "17-session-ended");
});

test("board: the task lists show each assignee's name and the prices, from one GetTaskBoard call", async () => {
  const page = await login("manager");
  const calls = countCalls(page);
  const all = page.locator("#all-tasks");
  const row = all.locator("li.task", { hasText: "Sweep the perches" });
  // Accounting prices a task when it first sees it: until then the row says "price pending".
  await eventually(async () => {
    await all.getByRole("button", { name: "Refresh" }).click();
    await all.locator(".list:not([aria-busy])").waitFor();
    assert.match(await row.locator(".price").textContent(), PRICE);
  });
  assert.match(await row.locator(".assignee").textContent(), /^.+ \([a-z][a-z0-9_.-]*\)$/);
  for (const r of await all.locator("li.task").all()) {
    assert.match(await r.locator(".assignee").textContent(), /\([a-z][a-z0-9_.-]*\)$/);
    assert.match(await r.locator(".price").textContent(), /^(fee .*|price pending)$/);
  }
  assert.equal(await all.locator(".notice", { hasText: "unavailable" }).count(), 0);
  // One call per list load (each Refresh above; the first load came before counting);
  // names and prices are not fetched by the browser.
  assert.ok(calls("BoardService/GetTaskBoard") >= 1, String(calls("BoardService/GetTaskBoard")));
  for (const rpc of ["TaskService/ListTasks", "AccountService/ListProfiles", "PriceService/GetTaskPrices"]) {
    assert.equal(calls(rpc), 0, rpc);
  }
  await shot(page, "18-board-names-prices");

  // A worker's own tasks carry their prices too (the done one: the reward it brought).
  const task = state.completed[0];
  assert.ok(task, "the worker scenario completed a task");
  const worker = await login(task.assignee);
  const mine = worker.locator("#my-tasks");
  await mine.getByLabel("Status").selectOption({ label: "Done" });
  await eventually(async () => assert.match(await mine.locator("li.task", { hasText: task.title }).first().locator(".price").textContent(), PRICE));
  await worker.context().close();
});

// Stops this run's Accounting for good: keep it the last scenario that needs Accounting.
test("outage: with Accounting stopped the board still lists the tasks and says prices are unavailable", async (t) => {
  const pid = meshAccountingPid();
  if (!pid) {
    t.skip("no Accounting process of tests/e2e.sh to stop (MONEY_ADDR unset or not ours)");
    return;
  }
  const page = await login("manager");
  const all = page.locator("#all-tasks");
  await all.locator(".list:not([aria-busy])").waitFor();
  process.kill(pid, "SIGTERM");
  await eventually(async () => assert.ok([undefined, "Z"].includes(procStat(pid)?.state), `accounting (${pid}) still runs`), 30_000, 200);
  // A task created now has no price anywhere (not even in the gateway's cache), so the
  // board must ask Accounting for it — and cannot.
  const task = await createTask(page, `Water the palms ${Date.now()}`, "UBERPOP-44", "while Accounting is away");
  await all.getByLabel("Status").selectOption({ label: "Open" });
  const notice = all.getByRole("status").filter({ hasText: "Prices unavailable" });
  await eventually(async () => {
    await all.getByRole("button", { name: "Refresh" }).click();
    await all.locator(".list:not([aria-busy])").waitFor();
    assert.equal(await notice.count(), 1);
  });
  assert.match(await notice.textContent(), /^Prices unavailable right now: the tasks are listed without their prices\./);
  assert.equal(await all.getByRole("alert").count(), 0, "no error: the list is there");
  const row = all.locator("li.task", { hasText: task.title });
  await row.waitFor();
  assert.equal(await row.locator(".price").textContent(), "price unavailable");
  // Account is up: the names are still there.
  assert.match(await row.locator(".assignee").textContent(), /\([a-z][a-z0-9_.-]*\)$/);
  assert.ok((await all.locator("li.task").count()) >= 1);
  await shot(page, "19-board-prices-unavailable");
});

test("no script errors on any page", () => {
  assert.deepEqual(pageErrors, []);
});
