import { getRouterParam, type H3 } from "h3";
import { z } from "zod";
import { randomUUID } from "node:crypto";
import type { AppContext } from "../context";
import { readJsonBody } from "../body";
import { validate } from "../validate";
import { badRequest, forbidden, notFound } from "../errors";
import { json } from "./sessions";
import { hashKey, newKey, principalOf, scopeAllows, type Principal } from "../auth";
import {
  SCOPES,
  ensureTenant,
  getApiKey,
  getTenant,
  insertApiKey,
  listApiKeys,
  listTenants,
  revokeApiKey,
  setApiKeyLimits,
  setTenantLimits,
  type ApiKeyRecord,
  type TenantRecord,
} from "../../db/queries/api-keys";

export const TENANT_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const tenantId = z.string().regex(TENANT_ID, "must be 1 to 63 lowercase letters, digits, - or _, starting with a letter or digit");

const limit = z.number().int().min(1).max(1_000_000_000);
export const limitsSchema = z
  .object({ requestsPerMinute: limit.optional(), liveSessions: limit.optional(), runningTurns: limit.optional(), tokensPerDay: limit.optional() })
  .strict();

const createKeySchema = z
  .object({
    label: z.string().min(1).max(200).optional(),
    tenant: tenantId.optional(),
    scope: z.enum(SCOPES).optional(),
    /** Milliseconds since the epoch or an ISO 8601 time; must be in the future. */
    expiresAt: z.union([z.number().int(), z.string().datetime({ offset: true })]).optional(),
    limits: limitsSchema.optional(),
  })
  .strict();

const patchKeySchema = z.object({ limits: limitsSchema }).strict();
const createTenantSchema = z.object({ id: tenantId, label: z.string().min(1).max(200).optional(), limits: limitsSchema.optional() }).strict();
const patchTenantSchema = z.object({ limits: limitsSchema }).strict();

const MAX_EXPIRY_MS = Date.UTC(10000, 0, 1);

export function presentKey(key: ApiKeyRecord) {
  return {
    id: key.id,
    label: key.label,
    tenant: key.tenantId,
    scope: key.operator ? "operator" : key.scope,
    // What the original API calls it; only the first characters, never the key.
    keyPrefix: key.prefix ? `${key.prefix}…` : null,
    createdAt: new Date(key.createdAt).toISOString(),
    // A key stored with a time past what a Date prints (before that was refused) never expires in practice.
    expiresAt: key.expiresAt === null || key.expiresAt >= MAX_EXPIRY_MS ? null : new Date(key.expiresAt).toISOString(),
    lastUsedAt: key.lastUsedAt === null ? null : new Date(key.lastUsedAt).toISOString(),
    revoked: key.revokedAt !== null,
    limits: key.limits,
  };
}

function presentTenant(t: TenantRecord) {
  return { id: t.id, label: t.label, limits: t.limits, createdAt: new Date(t.createdAt).toISOString() };
}

/**
 * A key another caller may change: its own tenant's, or any for the
 * operator; else "not found". An operator key (the first-boot key lives in
 * tenant "default") is the operator's alone: a tenant admin of "default"
 * could otherwise revoke or throttle it and lock the operator out.
 */
async function visibleKey(ctx: AppContext, caller: Principal, id: string): Promise<ApiKeyRecord> {
  const key = id === "env" ? undefined : await getApiKey(ctx.db, id);
  if (!key || (!caller.operator && (key.tenantId !== caller.tenantId || key.operator))) throw notFound(`No API key with id "${id}".`);
  return key;
}

export function registerKeys(app: H3, ctx: AppContext): void {
  // Tenant admins see their tenant's keys; the operator sees all (or one tenant's with ?tenant=).
  app.get("/api/api-keys", async (event) => {
    const caller = principalOf(event);
    const asked = new URL(event.req.url).searchParams.get("tenant");
    const tenant = caller.operator ? asked : caller.tenantId;
    return { keys: (await listApiKeys(ctx.db, tenant)).filter((k) => caller.operator || !k.operator).map(presentKey) };
  });

  app.post("/api/api-keys", async (event) => {
    const caller = principalOf(event);
    const body = validate(createKeySchema, (await readJsonBody(event, ctx.config.maxBodyBytes, { optional: true })) ?? {});
    const tenant = body.tenant ?? caller.tenantId;
    if (!caller.operator && tenant !== caller.tenantId) throw forbidden("A tenant's admin key makes keys for its own tenant only.");
    const scope = body.scope ?? "sessions";
    if (!caller.operator && !scopeAllows(caller.scope, scope)) throw forbidden(`A ${caller.scope} key cannot make a ${scope} key.`);
    let expiresAt: number | null = null;
    if (body.expiresAt !== undefined) {
      expiresAt = typeof body.expiresAt === "number" ? body.expiresAt : Date.parse(body.expiresAt);
      if (!(expiresAt > Date.now())) throw validateError("expiresAt", "must be in the future");
      // A time JavaScript can still print (and a key outliving the year 9999 is no expiry worth storing).
      if (expiresAt >= MAX_EXPIRY_MS) throw validateError("expiresAt", "must be before the year 10000");
    }
    // The operator makes a tenant by giving it its first key.
    await ensureTenant(ctx.db, tenant, tenant);
    const key = newKey();
    const id = randomUUID();
    await insertApiKey(ctx.db, { id, keyHash: hashKey(key).toString("hex"), label: body.label ?? `${scope} key`, tenantId: tenant, scope, prefix: key.slice(0, 12), expiresAt, limits: body.limits });
    const record = (await getApiKey(ctx.db, id))!;
    // The key itself is answered this once and stored nowhere.
    return json(201, { ...presentKey(record), key });
  });

  app.patch("/api/api-keys/:id", async (event) => {
    const caller = principalOf(event);
    const key = await visibleKey(ctx, caller, getRouterParam(event, "id")!);
    const body = validate(patchKeySchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    await setApiKeyLimits(ctx.db, key.id, body.limits);
    return { apiKey: presentKey((await getApiKey(ctx.db, key.id))!) };
  });

  // Revoked at once: the next request with it, on any server, is refused.
  app.delete("/api/api-keys/:id", async (event) => {
    const caller = principalOf(event);
    const key = await visibleKey(ctx, caller, getRouterParam(event, "id")!);
    if (key.id === caller.keyId) throw forbidden("A key cannot revoke itself; use another admin key.");
    await revokeApiKey(ctx.db, key.id, Date.now());
    return new Response(null, { status: 204 });
  });

  app.get("/api/tenants", async () => ({ tenants: (await listTenants(ctx.db)).map(presentTenant) }));

  app.post("/api/tenants", async (event) => {
    const body = validate(createTenantSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    if (!(await ensureTenant(ctx.db, body.id, body.label ?? body.id))) throw validateError("id", `a tenant "${body.id}" exists already`);
    if (body.limits) await setTenantLimits(ctx.db, body.id, body.limits);
    return json(201, { tenant: presentTenant((await getTenant(ctx.db, body.id))!) });
  });

  app.get("/api/tenants/:id", async (event) => {
    const caller = principalOf(event);
    const id = getRouterParam(event, "id")!;
    const tenant = caller.operator || id === caller.tenantId ? await getTenant(ctx.db, id) : undefined;
    if (!tenant) throw notFound(`No tenant "${id}".`);
    return { tenant: presentTenant(tenant) };
  });

  app.patch("/api/tenants/:id", async (event) => {
    const id = getRouterParam(event, "id")!;
    if (!(await getTenant(ctx.db, id))) throw notFound(`No tenant "${id}".`);
    const body = validate(patchTenantSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    await setTenantLimits(ctx.db, id, body.limits);
    return { tenant: presentTenant((await getTenant(ctx.db, id))!) };
  });
}

function validateError(field: string, message: string) {
  return badRequest(`The field "${field}" is invalid: ${message}.`);
}
