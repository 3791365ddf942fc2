// A few DOM helpers: no framework, just elements.
import { humanError } from "./errors.js";

type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2).toLowerCase(), v as EventListener);
    } else if (k === "class") {
      el.className = String(v);
    } else if (k === "value" && "value" in el) {
      (el as HTMLInputElement).value = String(v);
    } else if (v === true) {
      el.setAttribute(k, "");
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

let ids = 0;
export function uid(prefix: string): string {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled form field: <label for> + control, with an optional hint. */
export function field(
  label: string,
  control: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement,
  hint?: string,
): HTMLDivElement {
  if (!control.id) control.id = uid("f");
  const hintEl = hint ? h("small", { id: `${control.id}-hint`, class: "hint" }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

/** A message area: errors are announced (role=alert), successes politely (role=status). */
export class Notice {
  readonly el = h("div", { class: "notice", hidden: true });
  error(text: string): void {
    this.show(text, "error", "alert");
  }
  ok(text: string): void {
    this.show(text, "ok", "status");
  }
  /** Something partly worked (e.g. a list shown without a part that could not be fetched). */
  warn(text: string): void {
    this.show(text, "warn", "status");
  }
  clear(): void {
    this.el.hidden = true;
    this.el.textContent = "";
  }
  private show(text: string, kind: string, role: string): void {
    this.el.className = `notice ${kind}`;
    this.el.setAttribute("role", role);
    this.el.textContent = text;
    this.el.hidden = false;
  }
}

/** Disables a button while `work` runs. */
export async function busy<T>(button: HTMLButtonElement, work: () => Promise<T>): Promise<T> {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/**
 * A modal confirmation (<dialog>). Resolves true when confirmed. `onConfirm` may do the
 * work and return a result line, shown in the dialog before it closes on "Close".
 */
export function confirmDialog(opts: {
  title: string;
  body: string;
  confirm: string;
  onConfirm?: () => Promise<string>;
}): Promise<boolean> {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const notice = new Notice();
    const ok = h("button", { type: "button", class: "primary" }, opts.confirm);
    const cancel = h("button", { type: "button" }, "Cancel");
    const body = h("p", {}, opts.body);
    const actions = h("div", { class: "actions" }, ok, cancel);
    const dialog = h(
      "dialog",
      { "aria-labelledby": titleId, class: "dialog" },
      h("h2", { id: titleId }, opts.title),
      body,
      notice.el,
      actions,
    );
    let confirmed = false;
    const close = () => {
      dialog.close();
      dialog.remove();
      resolve(confirmed);
    };
    cancel.addEventListener("click", close);
    dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      close();
    });
    ok.addEventListener("click", async () => {
      if (!opts.onConfirm) {
        confirmed = true;
        close();
        return;
      }
      try {
        const result = await busy(ok, opts.onConfirm);
        confirmed = true;
        notice.ok(result);
        const done = h("button", { type: "button", class: "primary" }, "Close");
        done.addEventListener("click", close);
        replace(actions, done);
        done.focus();
      } catch (err) {
        notice.error(humanError(err));
      }
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    ok.focus();
  });
}
