import { login } from "../api.js";
import { busy, field, h, Notice, replace } from "../dom.js";
import { humanError } from "../errors.js";

export function loginPage(app: HTMLElement, message: string | null, done: () => void): void {
  const notice = new Notice();
  const username = h("input", { name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card login", "aria-labelledby": "login-title", novalidate: true },
    h("h1", { id: "login-title" }, "Sign in to PopugJira"),
    notice.el,
    field("Username", username),
    field("Password", password),
    submit,
  );
  if (message) notice.ok(message);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    notice.clear();
    if (!username.value.trim() || !password.value) {
      notice.error("Please enter your username and password.");
      return;
    }
    try {
      await busy(submit, () => login(username.value.trim(), password.value));
      done();
    } catch (err) {
      notice.error(humanError(err, "login"));
      password.select();
    }
  });
  replace(app, h("main", { id: "main", class: "center" }, form));
  username.focus();
}
