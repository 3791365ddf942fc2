// Turns a failed call into a sentence a popug understands.
import { Code, ConnectError } from "@connectrpc/connect";

/** Server messages for input errors start with the field name ("title: ..."). */
function fieldMessage(raw: string): string {
  const m = /^([a-z_]+): (.*)$/s.exec(raw);
  if (!m) return raw;
  const field = m[1].replace(/_/g, " ");
  const label = field === "jira id" ? "Jira id" : field.charAt(0).toUpperCase() + field.slice(1);
  return `${label}: ${m[2]}`;
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

/** The input the server blamed (INVALID_ARGUMENT / ALREADY_EXISTS name the field first). */
export function blamedField(err: unknown): string | null {
  if (!(err instanceof ConnectError)) return null;
  if (err.code !== Code.InvalidArgument && err.code !== Code.AlreadyExists) return null;
  return /^([a-z_]+)\b/.exec(err.rawMessage.trim())?.[1] ?? null;
}

/** Marks the blamed control invalid (and focuses it); clears the others. */
export function markInvalid(err: unknown, controls: Record<string, HTMLElement>): void {
  const blamed = blamedField(err);
  for (const [name, el] of Object.entries(controls)) {
    if (name === blamed) {
      el.setAttribute("aria-invalid", "true");
      el.focus();
    } else {
      el.removeAttribute("aria-invalid");
    }
  }
}
