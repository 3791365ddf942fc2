// Accounts (admins): create a user, change a role, deactivate.
import { accounts, idempotent, session } from "../api.js";
import { busy, confirmDialog, field, h, Notice, replace } from "../dom.js";
import { humanError, markInvalid } from "../errors.js";
import { Role, type Account } from "../gen/popug/account/v1/account_pb.js";
import { allAccounts, roleNames } from "../people.js";

const ROLES = [Role.WORKER, Role.ACCOUNTANT, Role.MANAGER, Role.ADMIN];

function roleSelect(name: string, value: Role): HTMLSelectElement {
  const sel = h("select", { name }, ROLES.map((r) => h("option", { value: String(r) }, roleNames[r])));
  sel.value = String(value);
  return sel;
}

export function accountsPage(main: HTMLElement): void {
  const me = session()!.claims;
  const listNotice = new Notice();
  const body = h("div", { class: "list" });

  const load = async () => {
    listNotice.clear();
    try {
      const all = await allAccounts();
      replace(
        body,
        h(
          "table",
          { class: "accounts" },
          h("thead", {}, h("tr", {}, ["Username", "Name", "E-mail", "Role", "Status", ""].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, all.map(row)),
        ),
      );
    } catch (err) {
      listNotice.error(humanError(err));
    }
  };

  const row = (a: Account): HTMLElement => {
    const sel = roleSelect(`role-${a.username}`, a.role);
    sel.setAttribute("aria-label", `Role of ${a.username}`);
    sel.disabled = !a.active || a.id === me.sub;
    sel.addEventListener("change", async () => {
      const role = Number(sel.value) as Role;
      listNotice.clear();
      sel.disabled = true;
      try {
        const res = await accounts.updateAccount({ id: a.id, role });
        listNotice.ok(`${a.username} is now ${roleNames[res.account?.role ?? role]}.`);
        a.role = role;
      } catch (err) {
        sel.value = String(a.role);
        listNotice.error(humanError(err));
      } finally {
        sel.disabled = false;
      }
    });
    const deactivate = h("button", { type: "button", class: "danger", "aria-label": `Deactivate ${a.username}` }, "Deactivate");
    deactivate.hidden = !a.active || a.id === me.sub;
    deactivate.addEventListener("click", async () => {
      listNotice.clear();
      const ok = await confirmDialog({
        title: `Deactivate ${a.username}?`,
        body: "They can no longer sign in and get no new tasks. Their history stays.",
        confirm: "Deactivate",
      });
      if (!ok) return;
      try {
        await busy(deactivate, () => accounts.deleteAccount({ id: a.id }));
        await load();
        listNotice.ok(`${a.username} is deactivated.`);
      } catch (err) {
        listNotice.error(humanError(err));
      }
    });
    return h(
      "tr",
      { "data-username": a.username, class: a.active ? "" : "inactive" },
      h("td", { "data-label": "Username" }, a.username),
      h("td", { "data-label": "Name" }, `${a.name} ${a.surname}`),
      h("td", { "data-label": "E-mail" }, a.email),
      h("td", { "data-label": "Role" }, sel),
      h("td", { "data-label": "Status" }, a.active ? "active" : "deactivated"),
      h("td", {}, deactivate),
    );
  };

  // --- create ---
  const notice = new Notice();
  const username = h("input", { name: "username", required: true, autocomplete: "off", autocapitalize: "none", spellcheck: "false" });
  const name = h("input", { name: "name", required: true, autocomplete: "off" });
  const surname = h("input", { name: "surname", required: true, autocomplete: "off" });
  const email = h("input", { name: "email", type: "email", required: true, autocomplete: "off" });
  const role = roleSelect("role", Role.WORKER);
  const password = h("input", { name: "new-password", type: "password", required: true, autocomplete: "new-password", minlength: 8 });
  const submit = h("button", { type: "submit", class: "primary" }, "Create user");
  const fields = { username, name, surname, email, role, password };
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "new-user-title", novalidate: true },
    h("h2", { id: "new-user-title" }, "New user"),
    notice.el,
    h("div", { class: "row" }, field("Username", username, "3–32 of a–z 0–9 _ . -, starting with a letter"), field("E-mail", email)),
    h("div", { class: "row" }, field("Name", name), field("Surname", surname)),
    h("div", { class: "row" }, field("Role", role), field("Password", password, "At least 8 characters")),
    submit,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    notice.clear();
    try {
      const res = await busy(submit, () =>
        accounts.createAccount({
          username: username.value.trim(),
          name: name.value.trim(),
          surname: surname.value.trim(),
          email: email.value.trim(),
          role: Number(role.value) as Role,
          password: password.value,
        }, idempotent()),
      );
      notice.ok(`Created ${res.account?.username} (${roleNames[res.account?.role ?? Role.UNSPECIFIED]}).`);
      form.reset();
      await load();
      markInvalid(null, fields);
    } catch (err) {
      notice.error(humanError(err));
      markInvalid(err, fields);
    }
  });

  replace(
    main,
    h("h1", {}, "Accounts"),
    form,
    h("section", { class: "card", "aria-labelledby": "users-title" }, h("h2", { id: "users-title" }, "Users"), listNotice.el, body),
  );
  void load();
}
