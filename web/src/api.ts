// The gateway's services over grpc-web, and the signed-in session: tokens kept in
// localStorage, refreshed silently before they expire (and once more on UNAUTHENTICATED);
// when refreshing fails the session ends and the app returns to the login page.
import { getOption, hasOption, type DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService, type TokenPair } from "./gen/popug/account/v1/auth_pb.js";
import { AccountService } from "./gen/popug/account/v1/account_pb.js";
import { TaskService } from "./gen/popug/tasks/v1/tasks_pb.js";
import { AccountingService } from "./gen/popug/accounting/v1/accounting_pb.js";
import { AnalyticsService } from "./gen/popug/analytics/v1/analytics_pb.js";
import { BoardService } from "./gen/popug/gateway/v1/board_pb.js";
import { policy } from "./gen/popug/authz/v1/policy_pb.js";

/** What the access token says about its holder (its JWT claims). */
export interface Claims {
  sub: string;
  username: string;
  name: string;
  surname: string;
  role: string;
  permissions: string[];
  exp: number;
}

export interface Session {
  accessToken: string;
  refreshToken: string;
  /** Epoch ms when the access token expires. */
  expiresAt: number;
  claims: Claims;
}

const STORAGE_KEY = "popugjira.session";
/** Refresh this long before the access token expires. */
const REFRESH_MARGIN_MS = 60_000;

export const baseUrl: string =
  (import.meta.env.VITE_GATEWAY_URL as string | undefined)?.replace(/\/$/, "") || window.location.origin;

function decodeClaims(jwt: string): Claims {
  const part = jwt.split(".")[1] ?? "";
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
  const raw = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
  return {
    sub: String(raw.sub ?? ""),
    username: String(raw.username ?? ""),
    name: String(raw.name ?? ""),
    surname: String(raw.surname ?? ""),
    role: String(raw.role ?? ""),
    permissions: Array.isArray(raw.permissions) ? raw.permissions.map(String) : [],
    exp: Number(raw.exp ?? 0),
  };
}

function sessionFrom(tokens: TokenPair): Session {
  const claims = decodeClaims(tokens.accessToken);
  const ttl = Number(tokens.expiresIn) * 1000;
  const expiresAt = ttl > 0 ? Date.now() + ttl : claims.exp * 1000;
  return { accessToken: tokens.accessToken, refreshToken: tokens.refreshToken, expiresAt, claims };
}

let current: Session | null = load();
let refreshing: Promise<Session | null> | null = null;
let timer: number | undefined;
const listeners = new Set<(s: Session | null, reason?: string) => void>();

function load(): Session | null {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

function store(s: Session | null, reason?: string): void {
  current = s;
  if (s) localStorage.setItem(STORAGE_KEY, JSON.stringify(s));
  else localStorage.removeItem(STORAGE_KEY);
  schedule();
  for (const l of listeners) l(s, reason);
}

/** Refreshes in the background shortly before the access token expires. */
function schedule(): void {
  if (timer !== undefined) window.clearTimeout(timer);
  timer = undefined;
  if (!current) return;
  const delay = Math.max(0, current.expiresAt - REFRESH_MARGIN_MS - Date.now());
  timer = window.setTimeout(() => void refresh(), Math.min(delay, 2_000_000_000));
}

export function session(): Session | null {
  return current;
}

/** Whether the signed-in user holds `permission` (for row-level scope: whose data a page
 * shows; who may call an RPC at all is `mayCall`). */
export function can(permission: string): boolean {
  return current?.claims.permissions.includes(permission) ?? false;
}

/** Whether the signed-in user may call `method`: its `(popug.authz.v1.policy)` option in
 * proto/, decided as the gateway and the services decide it (no policy: nobody). */
export function mayCall(method: DescMethod): boolean {
  if (!hasOption(method, policy)) return false;
  const p = getOption(method, policy);
  if (p.public) return true;
  if (!current) return false;
  return p.anyPermission.length === 0 || p.anyPermission.some(can);
}

export function onSessionChange(l: (s: Session | null, reason?: string) => void): void {
  listeners.add(l);
}

const transport = createGrpcWebTransport({ baseUrl, interceptors: [authInterceptor()] });
export const auth: Client<typeof AuthService> = createClient(AuthService, transport);
export const accounts: Client<typeof AccountService> = createClient(AccountService, transport);
export const tasks: Client<typeof TaskService> = createClient(TaskService, transport);
export const accounting: Client<typeof AccountingService> = createClient(AccountingService, transport);
export const analytics: Client<typeof AnalyticsService> = createClient(AnalyticsService, transport);
/** The gateway's own composed answers: tasks with names and prices in one call. */
export const board: Client<typeof BoardService> = createClient(BoardService, transport);

export async function login(username: string, password: string): Promise<Session> {
  const res = await auth.login({ username, password });
  if (!res.tokens) throw new ConnectError("no tokens", Code.Internal);
  const s = sessionFrom(res.tokens);
  store(s);
  return s;
}

export async function logout(): Promise<void> {
  const s = current;
  store(null, "signed-out");
  if (s) {
    try {
      await auth.logout({ refreshToken: s.refreshToken });
    } catch {
      // The session is gone locally either way.
    }
  }
}

/** Spends the refresh token for a new pair; one refresh at a time. Null: signed out. */
export function refresh(): Promise<Session | null> {
  if (refreshing) return refreshing;
  const s = current;
  if (!s) return Promise.resolve(null);
  refreshing = (async () => {
    try {
      const res = await auth.refresh({ refreshToken: s.refreshToken });
      if (!res.tokens) throw new ConnectError("no tokens", Code.Internal);
      const next = sessionFrom(res.tokens);
      store(next);
      return next;
    } catch (err) {
      const ce = ConnectError.from(err);
      // A network hiccup keeps the session (the next call tries again); a refused token ends it.
      if (ce.code === Code.Unauthenticated || ce.code === Code.InvalidArgument || ce.code === Code.NotFound) {
        store(null, "expired");
        return null;
      }
      throw err;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

function authInterceptor(): Interceptor {
  return (next) => async (req) => {
    if (req.service.typeName === AuthService.typeName) return next(req);
    let s = current;
    if (s && s.expiresAt - Date.now() < REFRESH_MARGIN_MS) s = await refresh();
    if (!s) {
      store(null, "expired");
      throw new ConnectError("not signed in", Code.Unauthenticated);
    }
    req.header.set("authorization", `Bearer ${s.accessToken}`);
    try {
      return await next(req);
    } catch (err) {
      const ce = ConnectError.from(err);
      if (ce.code !== Code.Unauthenticated) throw err;
      // The token may have been refused (expired, rotated key): refresh once and retry.
      const renewed = s === current ? await refresh() : current;
      if (!renewed) throw err;
      req.header.set("authorization", `Bearer ${renewed.accessToken}`);
      try {
        return await next(req);
      } catch (again) {
        if (ConnectError.from(again).code === Code.Unauthenticated) store(null, "expired");
        throw again;
      }
    }
  };
}

// Another tab signed in or out.
window.addEventListener("storage", (e) => {
  if (e.key !== STORAGE_KEY) return;
  const s = load();
  current = s;
  schedule();
  for (const l of listeners) l(s, s ? undefined : "signed-out");
});
schedule();

/**
 * Call options carrying a fresh `idempotency-key`: one per submit of a create, so a retry
 * of that submit (after a lost answer) cannot create twice. Random from
 * crypto.getRandomValues, which (unlike randomUUID) also works on plain-HTTP origins.
 */
export function idempotent(): { headers: Record<string, string> } {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const key = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return { headers: { "idempotency-key": key } };
}
