import { readFileSync } from "node:fs";

/** The unprivileged identity sandboxed processes run as. */
export interface SandboxUser {
  uid: number;
  gid: number;
  /** Account name when the uid comes from /etc/passwd. */
  name?: string;
}

/** The account the image creates for sandboxes. */
export const SANDBOX_USER_NAME = "ash-sandbox";
/** Used when no such account exists: a high uid no system account takes. */
export const FALLBACK_SANDBOX_ID = 10001;

/** Looks an account up in a passwd file; undefined when it is not there. */
export function lookupUser(name: string, passwdFile = "/etc/passwd"): SandboxUser | undefined {
  let text: string;
  try {
    text = readFileSync(passwdFile, "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    const [user, , uid, gid] = line.split(":");
    if (user === name && uid !== undefined && gid !== undefined) {
      return { uid: Number(uid), gid: Number(gid), name };
    }
  }
  return undefined;
}

/**
 * The user to run sandboxes as: explicit ids win, then the `ash-sandbox`
 * account, then 10001:10001. Root (uid 0) is refused: a sandbox that runs
 * as root is not a sandbox.
 */
export function resolveSandboxUser(options: { uid?: number; gid?: number } = {}): SandboxUser {
  const account = lookupUser(SANDBOX_USER_NAME);
  const uid = options.uid ?? account?.uid ?? FALLBACK_SANDBOX_ID;
  const gid = options.gid ?? (options.uid === undefined ? account?.gid : undefined) ?? options.uid ?? FALLBACK_SANDBOX_ID;
  for (const [label, id] of [["uid", uid], ["gid", gid]] as const) {
    if (!Number.isInteger(id) || id <= 0 || id > 0xfffffffe) {
      throw new Error(`Sandbox ${label} must be a positive integer other than 0 (root), got ${id}`);
    }
  }
  const name = account && account.uid === uid ? account.name : undefined;
  return { uid, gid, name };
}
