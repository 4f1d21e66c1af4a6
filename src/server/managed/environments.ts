import { getRouterParam, type H3, type H3Event } from "h3";
import { modelEndpointProblem } from "../../sessions/agent-env";
import { z } from "zod";
import { randomUUID } from "node:crypto";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { readJsonBody } from "../body";
import { validate } from "../validate";
import { badRequest, notFound } from "../errors";
import { json } from "../routes/sessions";
import { deleteEnvironment, getEnvironment, insertEnvironment, listEnvironments, updateEnvironment, type EnvironmentRecord } from "../../db/queries/managed";
import { booleanOf, decodePage, forwardPage, iso, isoOrNull, limitOf, metadataPatchSchema, metadataSchema, patchMetadata, queryOf } from "./common";

/** Every tenant has it: the server's sandbox as configured, nothing added. */
export const DEFAULT_ENVIRONMENT_ID = "env_default";

const packagesSchema = z
  .object({
    type: z.literal("packages").optional(),
    apt: z.array(z.string()).nullable().optional(),
    cargo: z.array(z.string()).nullable().optional(),
    gem: z.array(z.string()).nullable().optional(),
    go: z.array(z.string()).nullable().optional(),
    npm: z.array(z.string()).nullable().optional(),
    pip: z.array(z.string()).nullable().optional(),
  })
  .strict()
  .refine((p) => ["apt", "cargo", "gem", "go", "npm", "pip"].every((k) => !(p as Record<string, unknown[] | null | undefined>)[k]?.length), {
    message: "installing packages when a session starts is not available on this server: build them into the sandbox image",
  });

// Ash sandboxes reach only the hosts their agent allows (ash.json, /api egress): the network is the agent's choice, not the environment's.
const networkingSchema = z
  .object({
    type: z.enum(["limited", "unrestricted"]),
    allowed_hosts: z.array(z.string()).max(0, "allowed hosts are the agent's egress list on this server (ash.json, or PATCH /api/agents/{name}/config)").nullable().optional(),
    allow_mcp_servers: z.boolean().nullable().optional(),
    allow_package_managers: z.boolean().nullable().optional(),
  })
  .strict()
  .refine((n) => n.type === "limited", 'sandboxes here reach only the hosts their agent allows: use {"type":"limited"} and set the agent\'s egress list');

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a valid variable name").max(128);
const configSchema = z
  .object({
    type: z.literal("cloud", 'must be "cloud" (a sandbox on this server)'),
    networking: networkingSchema.nullable().optional(),
    packages: packagesSchema.nullable().optional(),
    /** Ash's own: variables every session in this environment gets (as /api's extraEnv). */
    env: z
      .record(envName, z.string().max(32_768))
      .refine((e) => Object.keys(e).length <= 100, "must have at most 100 variables")
      .superRefine((e, check) => {
        const problem = modelEndpointProblem(e);
        if (problem) check.addIssue({ code: "custom", message: problem });
      })
      .optional(),
  })
  .strict();

const createSchema = z
  .object({ name: z.string().min(1).max(255), description: z.string().max(2048).nullable().optional(), config: configSchema.nullable().optional(), metadata: metadataSchema.optional(), scope: z.enum(["organization", "account"]).nullable().optional() })
  .strict();
const updateSchema = z
  .object({ name: z.string().min(1).max(255).nullable().optional(), description: z.string().max(2048).nullable().optional(), config: configSchema.nullable().optional(), metadata: metadataPatchSchema.optional(), scope: z.enum(["organization", "account"]).nullable().optional() })
  .strict();

type Config = z.infer<typeof configSchema>;

/** What a session of this environment gets: its variables. */
export function environmentEnv(env: EnvironmentRecord | undefined): Record<string, string> {
  const vars = (env?.config as Config | undefined)?.env;
  return vars ? { ...vars } : {};
}

function defaultEnvironment(tenantId: string): EnvironmentRecord {
  return { id: DEFAULT_ENVIRONMENT_ID, tenantId, name: "default", description: "The server's sandbox as configured (limits: GET /health).", config: { type: "cloud" }, metadata: {}, createdAt: 0, updatedAt: 0, archivedAt: null };
}

export function presentEnvironment(e: EnvironmentRecord) {
  const config = e.config as Config;
  return {
    type: "environment" as const,
    id: e.id,
    name: e.name,
    description: e.description,
    config: {
      type: "cloud",
      networking: { type: "limited", allowed_hosts: [], allow_mcp_servers: false, allow_package_managers: false },
      packages: { type: "packages", apt: [], cargo: [], gem: [], go: [], npm: [], pip: [] },
      // Values are secrets as often as not: only the names are shown.
      env: Object.fromEntries(Object.keys(config.env ?? {}).map((k) => [k, "***"])),
    },
    metadata: e.metadata,
    scope: "organization",
    archived_at: isoOrNull(e.archivedAt),
    created_at: iso(e.createdAt),
    updated_at: iso(e.updatedAt),
  };
}

/** A tenant's environment by id (the default one included), for sessions. */
export async function findEnvironment(ctx: AppContext, tenantId: string, id: string): Promise<EnvironmentRecord> {
  if (id === DEFAULT_ENVIRONMENT_ID) return defaultEnvironment(tenantId);
  const env = await getEnvironment(ctx.db, tenantId, id);
  if (!env) throw notFound(`No environment with id "${id}".`);
  return env;
}

export function registerManagedEnvironments(app: H3, ctx: AppContext): void {
  const idOf = (event: H3Event) => getRouterParam(event, "id") ?? "";
  const ownOnly = (id: string) => {
    if (id === DEFAULT_ENVIRONMENT_ID) throw badRequest("The default environment is the server's own settings and cannot be changed, archived or deleted; create an environment of your own.");
  };

  app.post("/v1/environments", async (event) => {
    const body = validate(createSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const now = Date.now();
    const env: EnvironmentRecord = {
      id: `env_${randomUUID().replace(/-/g, "")}`,
      tenantId: principalOf(event).tenantId,
      name: body.name,
      description: body.description ?? null,
      config: body.config ?? { type: "cloud" },
      metadata: body.metadata ?? {},
      createdAt: now,
      updatedAt: now,
      archivedAt: null,
    };
    await insertEnvironment(ctx.db, env);
    return json(200, presentEnvironment(env));
  });

  // The default environment first, then the tenant's own, oldest first.
  app.get("/v1/environments", async (event) => {
    const q = queryOf(event);
    const limit = limitOf(q);
    const page = decodePage(q);
    const tenantId = principalOf(event).tenantId;
    const first = page ? [] : [defaultEnvironment(tenantId)];
    const rows = await listEnvironments(ctx.db, tenantId, { includeArchived: booleanOf(q, "include_archived"), limit: limit - first.length + 1, cursor: page });
    const { items, next } = forwardPage([...first, ...rows], limit);
    return { data: items.map(presentEnvironment), next_page: next };
  });

  app.get("/v1/environments/:id", async (event) => presentEnvironment(await findEnvironment(ctx, principalOf(event).tenantId, idOf(event))));

  app.post("/v1/environments/:id", async (event) => {
    const body = validate(updateSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    ownOnly(idOf(event));
    const env = await findEnvironment(ctx, principalOf(event).tenantId, idOf(event));
    if (env.archivedAt !== null) throw badRequest(`Environment "${env.id}" is archived and cannot be changed.`);
    const next: EnvironmentRecord = {
      ...env,
      name: body.name ?? env.name,
      description: body.description === undefined ? env.description : body.description,
      config: body.config === undefined ? env.config : (body.config ?? { type: "cloud" }),
      metadata: patchMetadata(env.metadata, body.metadata),
      updatedAt: Date.now(),
    };
    await updateEnvironment(ctx.db, next);
    return presentEnvironment(next);
  });

  app.post("/v1/environments/:id/archive", async (event) => {
    ownOnly(idOf(event));
    const env = await findEnvironment(ctx, principalOf(event).tenantId, idOf(event));
    const next = env.archivedAt === null ? { ...env, archivedAt: Date.now(), updatedAt: Date.now() } : env;
    if (next !== env) await updateEnvironment(ctx.db, next);
    return presentEnvironment(next);
  });

  // Sessions that ran in it keep their variables (they were copied when each session began).
  app.delete("/v1/environments/:id", async (event) => {
    ownOnly(idOf(event));
    const tenantId = principalOf(event).tenantId;
    if (!(await deleteEnvironment(ctx.db, tenantId, idOf(event)))) throw notFound(`No environment with id "${idOf(event)}".`);
    return { type: "environment_deleted", id: idOf(event) };
  });
}
