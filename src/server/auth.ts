import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { open } from "node:fs/promises";
import { join } from "node:path";
import type { AshDatabase } from "../db/types";
import { apiKeyByHash, countApiKeys, insertApiKey, touchApiKey, type KeyLimits, type Scope } from "../db/queries/api-keys";
import { isUniqueViolation } from "../db/errors";

export const INITIAL_KEY_FILE = "initial-api-key";
/** The first-boot key's fixed id: the insert happens once even when several servers start together. */
export const INITIAL_KEY_ID = "initial";
const TOUCH_EVERY_MS = 60_000;

export function hashKey(key: string): Buffer {
  return createHash("sha256").update(key, "utf8").digest();
}

/** A new key: `ash_` and 32 random bytes. */
export function newKey(): string {
  return `ash_${randomBytes(32).toString("base64url")}`;
}

/** Who is calling: the key's id, its tenant and what it may do. */
export interface Principal {
  keyId: string;
  tenantId: string;
  scope: Scope;
  /** Admin of every tenant (the server's own key). */
  operator: boolean;
  /** The key's own limits (the server's defaults fill what it leaves unset, except for operators). */
  limits: KeyLimits;
  /** Its tenant's limits, shared by all the tenant's keys. */
  tenantLimits: KeyLimits;
}

const RANK: Record<Scope, number> = { read: 0, sessions: 1, admin: 2 };

/** True when `has` includes `needs` (read < sessions < admin). */
export function scopeAllows(has: Scope, needs: Scope): boolean {
  return RANK[has] >= RANK[needs];
}

/**
 * The API keys. The database holds only SHA-256 hashes (keys are 32 random
 * bytes: a slow hash adds nothing); a presented key is hashed and looked up,
 * so revoking or expiring one takes effect on the next request on every
 * server. ASH_API_KEY, when set, is compared in memory in constant time and
 * replaces the first-boot key.
 */
export class Keys {
  private readonly touched = new Map<string, number>();

  private constructor(
    private readonly db: AshDatabase,
    private readonly envHash: Buffer | undefined,
    /** The server's default limits of every key that is not the operator's. */
    private readonly defaults: KeyLimits,
  ) {}

  static async load(db: AshDatabase, options: { apiKey?: string; dataDir: string; log: (message: string) => void; defaults?: KeyLimits }): Promise<Keys> {
    const defaults = options.defaults ?? {};
    if (options.apiKey) return new Keys(db, hashKey(options.apiKey), defaults);
    if ((await countApiKeys(db)) > 0) return new Keys(db, undefined, defaults);
    const key = newKey();
    try {
      await insertApiKey(db, { id: INITIAL_KEY_ID, keyHash: hashKey(key).toString("hex"), label: "generated on first boot", operator: true, prefix: key.slice(0, 12) });
    } catch (error) {
      if (!isUniqueViolation(error)) throw error;
      return new Keys(db, undefined, defaults);
    }
    const file = await open(join(options.dataDir, INITIAL_KEY_FILE), "wx", 0o600);
    try {
      await file.writeFile(key + "\n");
      await file.sync();
    } finally {
      await file.close();
    }
    options.log(`No ASH_API_KEY was set: generated one and wrote it to ${INITIAL_KEY_FILE} in the data directory.`);
    return new Keys(db, undefined, defaults);
  }

  /** The caller behind a presented key, or null for a missing, unknown, revoked or expired one. */
  async authenticate(presented: string | undefined): Promise<Principal | null> {
    if (!presented) return null;
    const candidate = hashKey(presented);
    if (this.envHash && timingSafeEqual(candidate, this.envHash)) return { keyId: "env", tenantId: "default", scope: "admin", operator: true, limits: {}, tenantLimits: {} };
    const row = await apiKeyByHash(this.db, candidate.toString("hex"));
    if (!row || row.revokedAt !== null) return null;
    const now = Date.now();
    if (row.expiresAt !== null && row.expiresAt <= now) return null;
    // ASH_API_KEY replaces the key generated on first boot.
    if (this.envHash && row.id === INITIAL_KEY_ID) return null;
    if (now - (this.touched.get(row.id) ?? 0) > TOUCH_EVERY_MS) {
      this.touched.set(row.id, now);
      void touchApiKey(this.db, row.id, now).catch(() => undefined);
    }
    const limits = row.operator ? row.limits : { ...this.defaults, ...row.limits };
    return { keyId: row.id, tenantId: row.tenantId, scope: row.scope, operator: row.operator, limits, tenantLimits: row.tenantLimits };
  }
}

/** The key from `Authorization: Bearer <key>`. */
export function bearerKey(header: string | null): string | undefined {
  const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return match?.[1];
}

declare module "h3" {
  interface H3EventContext {
    /** Set by the app's access check on every request that presented a valid key. */
    principal?: Principal;
  }
}

/** The caller of a request that passed the access check. */
export function principalOf(event: { context: { principal?: Principal } }): Principal {
  const principal = event.context.principal;
  if (!principal) throw new Error("no principal on a request that needs one: the route is missing from ROUTE_ACCESS");
  return principal;
}
