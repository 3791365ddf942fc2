// Names for account ids (task assignees, ledger owners), via ListProfiles, cached.
import { accounts, mayCall } from "./api.js";
import type { Account, Profile } from "./gen/popug/account/v1/account_pb.js";
import { AccountService, ProfileSchema, Role } from "./gen/popug/account/v1/account_pb.js";
import { create } from "@bufbuild/protobuf";

const cache = new Map<string, Profile>();

export async function profiles(ids: Iterable<string>): Promise<Map<string, Profile>> {
  const missing = [...new Set(ids)].filter((id) => id && !cache.has(id));
  try {
    for (let i = 0; i < missing.length; i += 500) {
      const res = await accounts.listProfiles({ ids: missing.slice(i, i + 500) });
      for (const p of res.profiles) cache.set(p.id, p);
    }
  } catch (err) {
    // Admins can still name everyone from the full account list.
    if (!mayCall(AccountService.method.listAccounts)) throw err;
    for (const a of await allAccounts()) {
      cache.set(a.id, create(ProfileSchema, { id: a.id, username: a.username, name: a.name, surname: a.surname, role: a.role, active: a.active }));
    }
  }
  return cache;
}

/** Every account, page by page (admins). */
export async function allAccounts(): Promise<Account[]> {
  const all: Account[] = [];
  let token = "";
  do {
    const res = await accounts.listAccounts({ pageSize: 500, pageToken: token });
    all.push(...res.accounts);
    token = res.nextPageToken;
  } while (token);
  return all;
}

export function displayName(id: string): string {
  const p = cache.get(id);
  if (!p) return id ? `${id.slice(0, 8)}…` : "—";
  const full = `${p.name} ${p.surname}`.trim();
  return full ? `${full} (${p.username})` : p.username;
}

export const roleNames: Record<Role, string> = {
  [Role.UNSPECIFIED]: "—",
  [Role.ADMIN]: "admin",
  [Role.MANAGER]: "manager",
  [Role.ACCOUNTANT]: "accountant",
  [Role.WORKER]: "worker",
};
