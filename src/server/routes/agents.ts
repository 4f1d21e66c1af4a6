import { getRouterParam, type H3, type H3Event } from "h3";
import { modelEndpointProblem } from "../../sessions/agent-env";
import { z } from "zod";
import { randomUUID } from "node:crypto";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { readJsonBody } from "../body";
import { parseWholeNumber, validate, singleQuery } from "../validate";
import { badRequest, forbidden, notFound, unavailable, unprocessable } from "../errors";
import { getCredential } from "../../db/queries/credentials";
import { presentAgent, presentAgentVersion } from "../present";
import { checkAgentPath, decodeUploadedFiles, materializeAgent, mergeAgentFiles, readAgentFolder, removeAgentFolder, stageAgent } from "../../agents/agent-files";
import {
  activateAgentVersion,
  deleteAgent,
  deployAgent,
  getAgent,
  getAgentConfig,
  getAgentFile,
  getAgentFiles,
  getAgentVersionRecord,
  listAgents,
  listAgentVersions,
  undoDeploy,
  updateAgentConfig,
  type AgentConfig,
  type AgentFile,
  type AgentRecord,
  type AgentSettings,
} from "../../db/queries/agents";
import { AGENT_NAME, AGENT_NAME_RULE } from "../../contract";
import { confirmToolsSchema, json } from "./sessions";
import { fileResponse } from "./file-response";

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a valid variable name");
const envSchema = z.record(envName, z.string());
/** A change to an agent's environment: a value sets the variable, null removes it. */
const envPatchSchema = z.record(envName, z.string().nullable());

/** A host an agent may reach: `example.com`, `*.example.com`, optionally `:port`. */
export const egressHost = z.string().regex(/^(\*\.)?[a-zA-Z0-9_]([a-zA-Z0-9_.-]*[a-zA-Z0-9_])?(:\d{1,5})?$/, "must be a host name, *.suffix, or host:port").max(253);

/** `ash.json` in the agent folder: what the agent needs from Ash beyond its files. */
const agentManifestSchema = z.object({ egress: z.array(egressHost).max(500).optional(), maxTokens: z.number().int().min(1).optional(), confirmTools: confirmToolsSchema.optional() }).passthrough();

const fileSchema = z.object({ path: z.string(), content: z.string(), mode: z.number().int().optional() }).strict();
const systemPromptSchema = z.string().min(1, "must not be empty").max(200_000);

const deploySchema = z
  .object({
    name: z.string().regex(AGENT_NAME, `must be ${AGENT_NAME_RULE}`),
    files: z.array(fileSchema).optional(),
    path: z.string().min(1).optional(),
    env: envSchema.optional(),
    systemPrompt: systemPromptSchema.optional(),
    /** Hosts this agent's sessions may reach through the egress proxies (added to ash.json's). */
    egress: z.array(egressHost).max(500).optional(),
    /** Default token budget of each of its sessions. */
    maxTokens: z.number().int().min(1).optional(),
    /** A stored credential (POST /api/credentials) its sessions use unless they name their own. */
    credentialId: z.string().min(1).max(200).optional(),
    /** Tools its sessions hold for a person's allow or deny (wins over ash.json's). */
    confirmTools: confirmToolsSchema.optional(),
  })
  .strict();

/** What a new version changes, relative to the version it starts from. */
const changeFields = {
  systemPrompt: systemPromptSchema.nullable().optional(),
  env: envPatchSchema.optional(),
  files: z.array(fileSchema).max(5000).optional(),
  removeFiles: z.array(z.string()).max(5000).optional(),
  egress: z.array(egressHost).max(500).optional(),
  maxTokens: z.number().int().min(1).nullable().optional(),
  credentialId: z.string().min(1).max(200).nullable().optional(),
  confirmTools: confirmToolsSchema.nullable().optional(),
};
const patchSchema = z.object(changeFields).strict();
const createVersionSchema = z
  .object({
    ...changeFields,
    name: z.string().min(1).max(255).optional(),
    releaseNotes: z.string().max(10_000).optional(),
    cloneFrom: z.union([z.number().int().min(1), z.string().regex(/^[0-9]{1,9}$/, "must be a version number")]).optional(),
    activate: z.boolean().optional(),
  })
  .strict();
const addFilesSchema = z.object({ files: z.array(fileSchema).min(1, "must list at least one file").max(5000) }).strict();
const configSchema = z
  .object({
    warmSpares: z.number().int().min(0).max(100).nullable().optional(),
    maxTokens: z.number().int().min(1).nullable().optional(),
    egress: z.array(egressHost).max(500).optional(),
  })
  .strict();

type Change = z.infer<typeof patchSchema> & { label?: string; releaseNotes?: string };

function manifestOf(files: AgentFile[]): z.infer<typeof agentManifestSchema> {
  const file = files.find((f) => f.path === "ash.json");
  if (!file) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(file.content.toString("utf8"));
  } catch {
    throw unprocessable("ash.json in the agent folder is not valid JSON.");
  }
  const result = agentManifestSchema.safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw unprocessable(`ash.json in the agent folder is invalid: ${issue.path.join(".") || "the file"} ${issue.message}.`);
  }
  return result.data;
}

/** The CLAUDE.md of an agent deployed from a prompt alone. */
export function promptFile(prompt: string): AgentFile {
  return { path: "CLAUDE.md", mode: 0o644, content: Buffer.from(prompt, "utf8") };
}

export interface StoredVersion {
  tenantId: string;
  name: string;
  env: Record<string, string>;
  systemPrompt: string | null;
  files: AgentFile[];
  settings: AgentSettings;
  activate: boolean;
}

/**
 * Stores a version; when it becomes the active one, the folder under
 * <data>/agents/ is replaced too. A version is written whole or not at
 * all: files staged first, then the rows, then the swap. Both APIs (/api
 * and /v1) store agents through here.
 */
export async function storeAgentVersion(ctx: AppContext, input: StoredVersion) {
  const endpoint = modelEndpointProblem(input.env);
  if (endpoint) throw badRequest(`env: ${endpoint}.`);
  const staged = input.activate ? await stageAgent(ctx.config.dataDir, input.tenantId, input.name, input.files) : undefined;
  let agent;
  try {
    agent = await deployAgent(ctx.db, { id: randomUUID(), ...input });
  } catch (error) {
    await staged?.discard().catch(() => undefined);
    throw error;
  }
  try {
    await staged?.commit();
  } catch (error) {
    await undoDeploy(ctx.db, agent).catch((undo) => ctx.log.error(`agent ${agent.name}: taking back version ${agent.version} failed:`, undo));
    throw error;
  }
  return agent;
}

export function registerAgents(app: H3, ctx: AppContext): void {
  const storeVersion = (input: StoredVersion) => storeAgentVersion(ctx, input);

  /** A credential of the tenant an agent may name; 404 otherwise (another tenant's does not exist). */
  async function requireCredential(tenantId: string, id: string): Promise<string> {
    if (!ctx.vault) throw unavailable("credentialId needs stored credentials, which this server does not have: set ASH_CREDENTIAL_KEY where it starts.", 3600);
    if (!(await getCredential(ctx.db, tenantId, id))) throw notFound(`No credential with id "${id}".`);
    return id;
  }

  /** A new version made from `base` (default: the active one) with `change` applied. */
  async function changeAgent(agent: AgentRecord, change: Change, options: { from?: number; activate: boolean }) {
    const baseVersion = options.from ?? agent.version;
    const base = baseVersion === agent.version ? agent : await getAgentVersionRecord(ctx.db, agent.id, baseVersion);
    if (!base) throw badRequest(`cloneFrom: agent "${agent.name}" has no version ${baseVersion}.`);
    const managed = Boolean(base.settings.managed);
    let files = await getAgentFiles(ctx.db, agent.id, baseVersion);
    const added = change.files ? decodeUploadedFiles(change.files, { requireClaudeMd: false }) : [];
    if (managed && change.systemPrompt) added.push(promptFile(change.systemPrompt));
    if (managed && change.systemPrompt === null) throw badRequest('systemPrompt: this agent was deployed from a prompt alone; give a new prompt rather than null.');
    files = mergeAgentFiles(files, added, change.removeFiles ?? []);
    const env = { ...base.env };
    for (const [key, value] of Object.entries(change.env ?? {})) {
      if (value === null) delete env[key];
      else env[key] = value;
    }
    const settings: AgentSettings = { ...base.settings };
    delete settings.label;
    delete settings.releaseNotes;
    if (change.egress !== undefined) settings.egress = change.egress;
    if (change.maxTokens === null) delete settings.maxTokens;
    else if (change.maxTokens !== undefined) settings.maxTokens = change.maxTokens;
    if (change.credentialId === null) delete settings.credentialId;
    else if (change.credentialId !== undefined) settings.credentialId = await requireCredential(agent.tenantId, change.credentialId);
    if (change.confirmTools === null) delete settings.confirmTools;
    else if (change.confirmTools !== undefined) settings.confirmTools = change.confirmTools;
    if (change.label !== undefined) settings.label = change.label;
    if (change.releaseNotes !== undefined) settings.releaseNotes = change.releaseNotes;
    if (change.files?.some((f) => checkAgentPath(f.path) === "CLAUDE.md") && managed) delete settings.managed;
    const systemPrompt = managed ? null : change.systemPrompt === undefined ? base.systemPrompt : change.systemPrompt;
    return storeVersion({ tenantId: agent.tenantId, name: agent.name, env, systemPrompt, files, settings, activate: options.activate });
  }

  /** The prompt an agent runs with: its own, or (deployed from a prompt alone) its CLAUDE.md. */
  async function withPrompt<T extends { agentId?: string; id?: string; version: number; systemPrompt: string | null; settings: AgentSettings }>(agentId: string, record: T): Promise<string | null> {
    if (!record.settings.managed) return record.systemPrompt;
    return (await getAgentFile(ctx.db, agentId, record.version, "CLAUDE.md"))?.content.toString("utf8") ?? null;
  }

  async function present(agent: AgentRecord, config?: AgentConfig) {
    return presentAgent(agent, { systemPrompt: await withPrompt(agent.id, agent), config: config ?? (await getAgentConfig(ctx.db, agent.tenantId, agent.name)) ?? {} });
  }

  async function requireAgent(event: H3Event): Promise<AgentRecord> {
    const name = getRouterParam(event, "name")!;
    const agent = await getAgent(ctx.db, principalOf(event).tenantId, name);
    if (!agent) throw notFound(`No agent named "${name}".`);
    return agent;
  }

  async function requireVersion(event: H3Event, agent: AgentRecord) {
    const raw = getRouterParam(event, "version") ?? "";
    const number = parseWholeNumber(raw.replace(/^v/, ""), "The version in the path", 1, 1_000_000_000);
    const version = await getAgentVersionRecord(ctx.db, agent.id, number);
    if (!version) throw notFound(`Agent "${agent.name}" has no version ${number}.`);
    return version;
  }

  app.post("/api/agents", async (event) => {
    const body = validate(deploySchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const caller = principalOf(event);
    // A folder on the server is the operator's to hand out, not a tenant's to read.
    if (body.path && !caller.operator) throw forbidden('Deploying from a folder on the server ("path") needs the server\'s own key; upload the files instead.');
    if (body.files && body.path) throw badRequest('Give either "files" (an upload) or "path" (a folder on the server), not both.');
    if (!body.files && !body.path && body.systemPrompt === undefined) {
      throw badRequest('Give "files" (an upload), "path" (a folder on the server), or "systemPrompt" alone (the agent\'s CLAUDE.md is then made from it).');
    }
    // The whole upload is checked before anything is written.
    const managed = !body.files && !body.path;
    const files = managed
      ? [promptFile(body.systemPrompt!)]
      : body.files
        ? decodeUploadedFiles(body.files)
        : await readAgentFolder(ctx.config.dataDir, body.path!, ctx.config.agentRoots);
    const manifest = manifestOf(files);
    const egress = [...new Set([...(manifest.egress ?? []), ...(body.egress ?? [])])];
    const maxTokens = body.maxTokens ?? manifest.maxTokens;
    const settings: AgentSettings = { ...(egress.length ? { egress } : {}), ...(maxTokens !== undefined ? { maxTokens } : {}), ...(managed ? { managed: true } : {}) };
    if (body.credentialId !== undefined) settings.credentialId = await requireCredential(caller.tenantId, body.credentialId);
    const confirmTools = body.confirmTools ?? manifest.confirmTools;
    if (confirmTools !== undefined) settings.confirmTools = confirmTools;
    const agent = await storeVersion({ tenantId: caller.tenantId, name: body.name, env: body.env ?? {}, systemPrompt: managed ? null : (body.systemPrompt ?? null), files, settings, activate: true });
    return json(201, { agent: await present(agent) });
  });

  app.get("/api/agents", async (event) => {
    const agents = await listAgents(ctx.db, principalOf(event).tenantId);
    return { agents: await Promise.all(agents.map((a) => present(a))) };
  });

  app.get("/api/agents/:name", async (event) => ({ agent: await present(await requireAgent(event)) }));

  // A new active version with the changes; sessions already running keep theirs.
  app.patch("/api/agents/:name", async (event) => {
    // The body is read before any other await (the request stream must not sit unread).
    const body = validate(patchSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const agent = await requireAgent(event);
    if (Object.keys(body).length === 0) throw badRequest("Nothing to change: give systemPrompt, env, files, removeFiles, egress, maxTokens, credentialId or confirmTools.");
    return { agent: await present(await changeAgent(agent, body, { activate: true })) };
  });

  // Deleting an agent ends nothing: sessions made from it keep running on their own version
  // (docs/decisions/agents-versions-and-deletion.md); new sessions of that name get 404.
  app.delete("/api/agents/:name", async (event) => {
    const agent = await requireAgent(event);
    const shown = await present(agent);
    if (!(await deleteAgent(ctx.db, agent.tenantId, agent.name))) throw notFound(`No agent named "${agent.name}".`);
    await removeAgentFolder(ctx.config.dataDir, agent.tenantId, agent.name);
    return { agent: shown, deleted: true, ok: true };
  });

  // ---- Files of the active version (or ?version=N) -------------------------

  async function filesOf(event: H3Event, agent: AgentRecord) {
    const q = singleQuery(event);
    if (q.version === undefined) return { version: agent.version, createdAt: agent.updatedAt, files: await getAgentFiles(ctx.db, agent.id, agent.version) };
    const number = parseWholeNumber(typeof q.version === "string" ? q.version : "", 'The query parameter "version"', 1, 1_000_000_000);
    const version = await getAgentVersionRecord(ctx.db, agent.id, number);
    if (!version) throw notFound(`Agent "${agent.name}" has no version ${number}.`);
    return { version: number, createdAt: version.createdAt, files: await getAgentFiles(ctx.db, agent.id, number) };
  }

  app.get("/api/agents/:name/files", async (event) => {
    const agent = await requireAgent(event);
    const { version, createdAt, files } = await filesOf(event, agent);
    const modifiedAt = new Date(createdAt).toISOString();
    return { version, files: files.map((f) => ({ path: f.path, size: f.content.length, mode: f.mode, modifiedAt })) };
  });

  // JSON by default, as the original server did for agent files; ?format=raw for the bytes.
  app.get("/api/agents/:name/files/**", async (event) => {
    const agent = await requireAgent(event);
    const path = checkAgentPath(decodeURIComponent(getRouterParam(event, "_") ?? ""));
    const { files } = await filesOf(event, agent);
    const file = files.find((f) => f.path === path);
    if (!file) throw notFound(`Agent "${agent.name}" has no file "${path}".`);
    const format = singleQuery(event).format ?? "json";
    if (format === "raw") return fileResponse(path, file.content);
    if (format !== "json") throw badRequest('The query parameter "format" must be "json" or "raw".');
    const text = isUtf8Text(file.content);
    return { path, size: file.content.length, mode: file.mode, encoding: text ? "utf8" : "base64", content: file.content.toString(text ? "utf8" : "base64") };
  });

  // Adds or replaces files: a new active version, checked like a deploy.
  app.post("/api/agents/:name/files", async (event) => {
    const body = validate(addFilesSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const agent = await requireAgent(event);
    const updated = await changeAgent(agent, { files: body.files }, { activate: true });
    return json(201, { agent: await present(updated), files: body.files.map((f) => checkAgentPath(f.path)) });
  });

  // ---- Versions -------------------------------------------------------------

  const presentVersion = async (agentId: string, v: Awaited<ReturnType<typeof listAgentVersions>>[number]) => presentAgentVersion(v, await withPrompt(agentId, v));

  app.get("/api/agents/:name/versions", async (event) => {
    const agent = await requireAgent(event);
    const versions = await listAgentVersions(ctx.db, agent.id);
    return { versions: await Promise.all(versions.map((v) => presentVersion(agent.id, v))) };
  });

  // A new version from the active one (or `cloneFrom`); it becomes active only with `activate: true`.
  app.post("/api/agents/:name/versions", async (event) => {
    const body = await readJsonBody(event, ctx.config.maxBodyBytes, { optional: true });
    const { cloneFrom, activate, name, ...change } = validate(createVersionSchema, body ?? {});
    const agent = await requireAgent(event);
    const stored = await changeAgent(agent, { ...change, label: name }, { from: cloneFrom === undefined ? undefined : Number(cloneFrom), activate: activate === true });
    const version = (await getAgentVersionRecord(ctx.db, agent.id, stored.version))!;
    return json(201, { version: await presentVersion(agent.id, version) });
  });

  app.get("/api/agents/:name/versions/:version", async (event) => {
    const agent = await requireAgent(event);
    return { version: await presentVersion(agent.id, await requireVersion(event, agent)) };
  });

  // New sessions get this version from now on; running and sleeping sessions keep theirs.
  app.post("/api/agents/:name/versions/:version/activate", async (event) => {
    const agent = await requireAgent(event);
    const version = await requireVersion(event, agent);
    const files = await getAgentFiles(ctx.db, agent.id, version.version);
    if (!(await activateAgentVersion(ctx.db, agent.id, version.version))) throw notFound(`Agent "${agent.name}" has no version ${version.version}.`);
    // The folder under <data>/agents/ mirrors the active version.
    await materializeAgent(ctx.config.dataDir, agent.tenantId, agent.name, files);
    const active = (await getAgent(ctx.db, agent.tenantId, agent.name))!;
    return { activated: true, versionNumber: version.version, agent: await present(active) };
  });

  // ---- Config ---------------------------------------------------------------

  const presentConfig = (agent: AgentRecord, config: AgentConfig) => ({
    warmSpares: config.warmSpares ?? ctx.config.warmPool[agent.name] ?? 0,
    maxTokens: agent.settings.maxTokens ?? null,
    egress: agent.settings.egress ?? [],
    version: agent.version,
  });

  app.get("/api/agents/:name/config", async (event) => {
    const agent = await requireAgent(event);
    return { config: presentConfig(agent, (await getAgentConfig(ctx.db, agent.tenantId, agent.name)) ?? {}) };
  });

  // warmSpares is the agent's own (no new version); maxTokens and egress make a new active version.
  app.patch("/api/agents/:name/config", async (event) => {
    const body = validate(configSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    let agent = await requireAgent(event);
    if (Object.keys(body).length === 0) throw badRequest("Nothing to change: give warmSpares, maxTokens or egress.");
    if (body.maxTokens !== undefined || body.egress !== undefined) {
      agent = await changeAgent(agent, { maxTokens: body.maxTokens, egress: body.egress }, { activate: true });
    }
    let config = (await getAgentConfig(ctx.db, agent.tenantId, agent.name)) ?? {};
    if (body.warmSpares !== undefined) {
      const updated = await updateAgentConfig(ctx.db, agent.tenantId, agent.name, { warmSpares: body.warmSpares });
      if (!updated) throw notFound(`No agent named "${agent.name}".`);
      config = updated;
      // The pool makes or drops spares now rather than at its next round.
      ctx.sessions.warm.check();
    }
    return { config: presentConfig(agent, config) };
  });
}

function isUtf8Text(content: Buffer): boolean {
  if (content.includes(0)) return false;
  return Buffer.from(content.toString("utf8"), "utf8").equals(content);
}
