// Turns a failed call into a sentence a popug understands, and puts input errors next to
// the field they are about.
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";

/** Server messages for input errors start with the field's JSON name ("jiraId: ..."). */
const FIELD_FIRST = /^([A-Za-z][A-Za-z0-9_]*): (.*)$/s;

/** "jiraId" → "Jira id", "title" → "Title". */
function label(field: string): string {
  const words = field.replace(/_/g, " ").replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
  return words === "jira id" ? "Jira id" : words.charAt(0).toUpperCase() + words.slice(1);
}

function fieldMessage(raw: string): string {
  const m = FIELD_FIRST.exec(raw);
  return m ? `${label(m[1])}: ${m[2]}` : raw;
}

/** One input the server refused: its field (the request's JSON name) and why. */
export interface Violation {
  field: string;
  description: string;
}

/**
 * The fields an INVALID_ARGUMENT / ALREADY_EXISTS answer blames: the google.rpc.BadRequest
 * details when the answer carries them, else the field its message starts with.
 */
export function violations(err: unknown): Violation[] {
  if (!(err instanceof ConnectError)) return [];
  if (err.code !== Code.InvalidArgument && err.code !== Code.AlreadyExists) return [];
  const details = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  if (details.length > 0) return details.map((v) => ({ field: v.field, description: v.description }));
  const m = FIELD_FIRST.exec(err.rawMessage.trim());
  return m ? [{ field: m[1], description: m[2] }] : [];
}

export function humanError(err: unknown, context?: "login"): string {
  if (!(err instanceof ConnectError)) {
    if (err instanceof Error && /fetch|network/i.test(err.message)) {
      return "Cannot reach the server. Check your connection and try again.";
    }
    return "Something went wrong. Please try again.";
  }
  const raw = err.rawMessage.trim();
  switch (err.code) {
    case Code.Unauthenticated:
      return context === "login"
        ? "Wrong username or password (or the account is deactivated)."
        : "Your session has ended. Please sign in again.";
    case Code.PermissionDenied:
      return "You are not allowed to do that.";
    case Code.InvalidArgument:
      return raw ? `Please check your input — ${fieldMessage(raw)}` : "Please check your input.";
    case Code.AlreadyExists:
      return raw ? `Already taken — ${fieldMessage(raw)}` : "That already exists.";
    case Code.NotFound:
      return raw ? `Not found — ${raw}` : "Not found.";
    case Code.FailedPrecondition:
      return raw ? `Cannot do that right now — ${raw}` : "Cannot do that right now.";
    case Code.ResourceExhausted:
      return "Too many requests. Please wait a moment and try again.";
    case Code.Unavailable:
      return "The service is not available right now. Please try again in a moment.";
    case Code.DeadlineExceeded:
      return "The server took too long to answer. Please try again.";
    case Code.Unimplemented:
      return "This part of PopugJira is not available yet.";
    case Code.Canceled:
      return "The request was cancelled.";
    default:
      return "Something went wrong on our side. Please try again.";
  }
}

/**
 * Shows each violation next to its control (`controls` keyed by the request's JSON field
 * names): the control is marked invalid and described by the message under it; the first
 * blamed control gets the focus. Controls not blamed are cleared (`markInvalid(null, …)`
 * clears them all).
 */
export function markInvalid(err: unknown, controls: Record<string, HTMLElement>): void {
  const blamed = new Map(violations(err).map((v) => [v.field, v.description]));
  let focused = false;
  for (const [name, el] of Object.entries(controls)) {
    const errorId = `${el.id || name}-error`;
    document.getElementById(errorId)?.remove();
    const describedBy = (el.getAttribute("aria-describedby") ?? "").split(" ").filter((id) => id && id !== errorId);
    const description = blamed.get(name);
    if (description === undefined) {
      el.removeAttribute("aria-invalid");
    } else {
      const message = document.createElement("small");
      message.id = errorId;
      message.className = "field-error";
      message.textContent = description.charAt(0).toUpperCase() + description.slice(1);
      el.insertAdjacentElement("afterend", message);
      el.setAttribute("aria-invalid", "true");
      describedBy.push(errorId);
      if (!focused) {
        el.focus();
        focused = true;
      }
    }
    if (describedBy.length > 0) el.setAttribute("aria-describedby", describedBy.join(" "));
    else el.removeAttribute("aria-describedby");
  }
}
