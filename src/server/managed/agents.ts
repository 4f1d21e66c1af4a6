import { getRouterParam, type H3, type H3Event } from "h3";
import { z } from "zod";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { readJsonBody } from "../body";
import { validate, parseWholeNumber } from "../validate";
import { badRequest, conflict, notFound } from "../errors";
import { json } from "../routes/sessions";
import { promptFile, storeAgentVersion } from "../routes/agents";
import { mergeAgentFiles } from "../../agents/agent-files";
import {
  agentArchiveTimes,
  archiveAgent,
  getAgent,
  getAgentById,
  getAgentFile,
  getAgentFiles,
  getAgentVersionRecord,
  listAgents,
  listAgentVersions,
  type AgentRecord,
  type AgentSettings,
} from "../../db/queries/agents";
import { AGENT_NAME, AGENT_NAME_RULE } from "../../contract";
import { refuseFields, iso, isoOrNull, limitOf, metadataPatchSchema, metadataSchema, patchMetadata, queryOf, single, booleanOf, decodePage, encodePage } from "./common";
import {
  checkTools,
  folderFiles,
  managedFieldsOf,
  mcpServerSchema,
  mcpServersOfFolder,
  modelSchema,
  presentTools,
  skillsSchema,
  toolSchema,
  withManagedFields,
  type ManagedAgentFields,
} from "./agent-shape";

const nameSchema = z.string().regex(AGENT_NAME, `must be ${AGENT_NAME_RULE} (it is also the agent's name in ash and /api)`);
const systemSchema = z.string().max(200_000);
const identitySchema = z.object({ type: z.literal("service_account", "only the service_account execution identity exists on this server") }).strict();
const multiagentSchema = z.null();
const REFUSED = { multiagent: "multiagent sessions are not available on this server." };

const createSchema = z
  .object({
    name: nameSchema,
    model: modelSchema,
    description: z.string().max(2048).nullable().optional(),
    system: systemSchema.nullable().optional(),
    tools: z.array(toolSchema).max(256).optional(),
    mcp_servers: z.array(mcpServerSchema).max(20).optional(),
    skills: skillsSchema.optional(),
    metadata: metadataSchema.optional(),
    execution_identity: identitySchema.nullable().optional(),
    multiagent: multiagentSchema.optional(),
  })
  .strict();

const updateSchema = z
  .object({
    version: z.number().int().min(1).optional(),
    name: nameSchema.optional(),
    model: modelSchema.optional(),
    description: z.string().max(2048).nullable().optional(),
    system: systemSchema.nullable().optional(),
    tools: z.array(toolSchema).max(256).nullable().optional(),
    mcp_servers: z.array(mcpServerSchema).max(20).nullable().optional(),
    skills: skillsSchema.nullable().optional(),
    metadata: metadataPatchSchema.nullable().optional(),
    execution_identity: identitySchema.nullable().optional(),
    multiagent: multiagentSchema.optional(),
  })
  .strict();

const modelId = (model: z.infer<typeof modelSchema>) => (typeof model === "string" ? model : model.id);

/** One version of an agent, whichever API made it. */
export interface VersionView {
  id: string;
  tenantId: string;
  name: string;
  version: number;
  systemPrompt: string | null;
  settings: AgentSettings;
  createdAt: number;
  updatedAt: number;
  archivedAt: number | null;
}

/** An agent version as the API shows it (the session's `agent` is the same, less archive and times). */
export async function presentManagedAgent(ctx: AppContext, v: VersionView) {
  const fields = managedFieldsOf(v.settings);
  // A folder with its own CLAUDE.md runs with `systemPrompt` appended; one made from a prompt alone is that prompt.
  const system = v.settings.managed ? ((await getAgentFile(ctx.db, v.id, v.version, "CLAUDE.md"))?.content.toString("utf8") ?? null) : v.systemPrompt;
  const mcpServers = fields ? fields.mcpServers : mcpServersOfFolder(await getAgentFile(ctx.db, v.id, v.version, ".mcp.json"));
  return {
    type: "agent" as const,
    id: v.id,
    name: v.name,
    version: v.version,
    description: fields?.description ?? null,
    system: system === "" ? null : system,
    model: { id: fields?.model ?? "default", speed: "standard" },
    tools: presentTools(fields?.tools, v.settings.confirmTools),
    mcp_servers: mcpServers.map((s) => ({ name: s.name, type: "url", url: s.url })),
    skills: [],
    metadata: fields?.metadata ?? {},
    execution_identity: { type: "service_account" },
    multiagent: null,
    archived_at: isoOrNull(v.archivedAt),
    created_at: iso(v.createdAt),
    updated_at: iso(v.updatedAt),
  };
}


export function registerManagedAgents(app: H3, ctx: AppContext): void {
  const present = (v: VersionView) => presentManagedAgent(ctx, v);

  const viewOf = (agent: AgentRecord & { archivedAt: number | null }): VersionView => ({ ...agent });

  async function requireAgent(event: H3Event) {
    const id = getRouterParam(event, "id") ?? "";
    const agent = await getAgentById(ctx.db, principalOf(event).tenantId, id);
    if (!agent) throw notFound(`No agent with id "${id}".`);
    return agent;
  }

  async function versionView(agent: AgentRecord & { archivedAt: number | null }, number: number): Promise<VersionView> {
    const v = await getAgentVersionRecord(ctx.db, agent.id, number);
    if (!v) throw notFound(`Agent "${agent.id}" has no version ${number}.`);
    return { ...agent, version: v.version, systemPrompt: v.systemPrompt, settings: v.settings, updatedAt: v.createdAt };
  }

  app.post("/v1/agents", async (event) => {
    const raw = await readJsonBody(event, ctx.config.maxBodyBytes);
    refuseFields(raw, REFUSED);
    const body = validate(createSchema, raw);
    const caller = principalOf(event);
    const tools = body.tools;
    const mcpServers = body.mcp_servers ?? [];
    if (tools) checkTools(tools, mcpServers);
    if (await getAgent(ctx.db, caller.tenantId, body.name)) throw conflict(`An agent named "${body.name}" exists already: update it (POST /v1/agents/{id}) or pick another name.`);
    const fields: ManagedAgentFields = { description: body.description ?? null, metadata: body.metadata ?? {}, model: modelId(body.model), tools, mcpServers };
    const prompt = promptFile(body.system ?? "");
    const files = [prompt, ...folderFiles([], undefined, fields)];
    const stored = await storeAgentVersion(ctx, {
      tenantId: caller.tenantId,
      name: body.name,
      env: {},
      systemPrompt: null,
      files,
      settings: withManagedFields({ managed: true }, fields),
      activate: true,
    });
    const agent = (await getAgentById(ctx.db, caller.tenantId, stored.id))!;
    return json(200, await present(viewOf(agent)));
  });

  app.get("/v1/agents", async (event) => {
    const q = queryOf(event);
    const limit = limitOf(q);
    const includeArchived = booleanOf(q, "include_archived");
    const page = decodePage(q);
    const tenantId = principalOf(event).tenantId;
    const archived = await agentArchiveTimes(ctx.db, tenantId);
    const all = (await listAgents(ctx.db, tenantId))
      .map((a) => ({ ...a, archivedAt: archived.get(a.id) ?? null }))
      .filter((a) => includeArchived || a.archivedAt === null)
      .sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
    const start = page ? all.findIndex((a) => a.createdAt > page.createdAt || (a.createdAt === page.createdAt && a.id > page.id)) : 0;
    const slice = start < 0 ? [] : all.slice(start, start + limit);
    const last = slice[slice.length - 1];
    const more = start >= 0 && start + limit < all.length;
    return { data: await Promise.all(slice.map((a) => present(viewOf(a)))), next_page: more && last ? encodePage({ createdAt: last.createdAt, id: last.id }) : null };
  });

  app.get("/v1/agents/:id", async (event) => {
    const agent = await requireAgent(event);
    const raw = single(queryOf(event), "version");
    if (raw === undefined) return present(viewOf(agent));
    return present(await versionView(agent, parseWholeNumber(raw, 'The query parameter "version"', 1, 1_000_000_000)));
  });

  // An update is a new version that becomes the active one; sessions already running keep theirs.
  app.post("/v1/agents/:id", async (event) => {
    const raw = await readJsonBody(event, ctx.config.maxBodyBytes);
    refuseFields(raw, REFUSED);
    const body = validate(updateSchema, raw);
    const agent = await requireAgent(event);
    if (agent.archivedAt !== null) throw badRequest(`Agent "${agent.id}" is archived; archived agents cannot be changed.`);
    if (body.version !== undefined && body.version !== agent.version) {
      throw conflict(`Agent "${agent.id}" is at version ${agent.version}, not ${body.version}: someone changed it since you read it.`);
    }
    if (body.name !== undefined && body.name !== agent.name) throw badRequest(`name: an agent's name is its name in ash and /api too and cannot change; create a new agent named "${body.name}" instead.`);
    const previous = managedFieldsOf(agent.settings);
    const files = await getAgentFiles(ctx.db, agent.id, agent.version);
    const base: ManagedAgentFields = previous ?? { description: null, metadata: {}, model: null, tools: undefined, mcpServers: mcpServersOfFolder(files.find((f) => f.path === ".mcp.json")) };
    const next: ManagedAgentFields = {
      description: body.description === undefined ? base.description : body.description,
      metadata: patchMetadata(base.metadata, body.metadata),
      model: body.model === undefined ? base.model : modelId(body.model),
      tools: body.tools === undefined ? base.tools : (body.tools ?? []),
      mcpServers: body.mcp_servers === undefined ? base.mcpServers : (body.mcp_servers ?? []),
    };
    if (next.tools) checkTools(next.tools, next.mcpServers);
    const systemChanged = body.system !== undefined;
    const changed = systemChanged || JSON.stringify(next) !== JSON.stringify(base) || !previous;
    if (!changed) return present(viewOf(agent));
    const added = folderFiles(files, previous ?? { ...base, tools: undefined, mcpServers: base.mcpServers }, next);
    const managed = Boolean(agent.settings.managed);
    if (managed && systemChanged) added.push(promptFile(body.system ?? ""));
    const settings: AgentSettings = withManagedFields({ ...agent.settings }, next);
    delete settings.label;
    delete settings.releaseNotes;
    const stored = await storeAgentVersion(ctx, {
      tenantId: agent.tenantId,
      name: agent.name,
      env: agent.env,
      systemPrompt: managed ? null : systemChanged ? (body.system || null) : agent.systemPrompt,
      files: mergeAgentFiles(files, added),
      settings,
      activate: true,
    });
    return present(viewOf((await getAgentById(ctx.db, agent.tenantId, stored.id))!));
  });

  // Archived: listed only with include_archived, no new sessions; its sessions and versions stay.
  app.post("/v1/agents/:id/archive", async (event) => {
    const agent = await requireAgent(event);
    if (agent.archivedAt === null) await archiveAgent(ctx.db, agent.tenantId, agent.id, Date.now());
    return present(viewOf((await getAgentById(ctx.db, agent.tenantId, agent.id))!));
  });

  // Newest version first, as the API lists them.
  app.get("/v1/agents/:id/versions", async (event) => {
    const agent = await requireAgent(event);
    const q = queryOf(event);
    const limit = limitOf(q);
    const page = decodePage(q);
    const versions = (await listAgentVersions(ctx.db, agent.id)).reverse().filter((v) => !page || v.version < Number(page.id));
    const slice = versions.slice(0, limit);
    const data = await Promise.all(slice.map((v) => present({ ...agent, version: v.version, systemPrompt: v.systemPrompt, settings: v.settings, updatedAt: v.createdAt })));
    const last = slice[slice.length - 1];
    return { data, next_page: versions.length > limit && last ? encodePage({ createdAt: last.createdAt, id: String(last.version) }) : null };
  });
}

/** The tenant's agent a /v1 session names (by id), refusing an archived one. */
export async function agentForSession(ctx: AppContext, tenantId: string, id: string) {
  const agent = await getAgentById(ctx.db, tenantId, id);
  if (!agent) throw notFound(`No agent with id "${id}".`);
  if (agent.archivedAt !== null) throw badRequest(`Agent "${id}" is archived; archived agents start no sessions.`);
  return agent;
}
