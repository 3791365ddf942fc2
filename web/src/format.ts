import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

/** Signed cents as dollars: 1234 → "$12.34", -500 → "−$5.00". */
export function money(cents: bigint | number): string {
  const n = typeof cents === "bigint" ? Number(cents) : cents;
  const s = `$${(Math.abs(n) / 100).toFixed(2)}`;
  return n < 0 ? `−${s}` : s;
}

export function addDays(day: string, delta: number): string {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + delta);
  return d.toISOString().slice(0, 10);
}

/** "2026-03-03" → "03.03" (the spec's short form). */
export function shortDay(day: string): string {
  const [, m, d] = day.split("-");
  return `${d}.${m}`;
}

export function dateTime(ts: Timestamp | undefined): string {
  if (!ts) return "";
  return timestampDate(ts).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function time(ts: Timestamp | undefined): string {
  if (!ts) return "";
  return timestampDate(ts).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}
