import { getRouterParam, type H3 } from "h3";
import { z } from "zod";
import { randomUUID } from "node:crypto";
import type { AppContext } from "../context";
import { readJsonBody } from "../body";
import { validate } from "../validate";
import { badRequest, notFound, unprocessable } from "../errors";
import { presentAgent } from "../present";
import { decodeUploadedFiles, readAgentFolder, removeAgentFolder, stageAgent } from "../../agents/agent-files";
import { deleteAgent, deployAgent, getAgent, listAgents, undoDeploy, type AgentFile } from "../../db/queries/agents";
import { AGENT_NAME, AGENT_NAME_RULE } from "../../contract";

const envSchema = z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a valid variable name"), z.string());

/** A host an agent may reach: `example.com`, `*.example.com`, optionally `:port`. */
export const egressHost = z.string().regex(/^(\*\.)?[a-zA-Z0-9_]([a-zA-Z0-9_.-]*[a-zA-Z0-9_])?(:\d{1,5})?$/, "must be a host name, *.suffix, or host:port").max(253);

/** `ash.json` in the agent folder: what the agent needs from Ash beyond its files. */
const agentManifestSchema = z.object({ egress: z.array(egressHost).max(500).optional(), maxTokens: z.number().int().min(1).optional() }).passthrough();

const deploySchema = z
  .object({
    name: z.string().regex(AGENT_NAME, `must be ${AGENT_NAME_RULE}`),
    files: z.array(z.object({ path: z.string(), content: z.string(), mode: z.number().int().optional() }).strict()).optional(),
    path: z.string().min(1).optional(),
    env: envSchema.optional(),
    systemPrompt: z.string().max(200_000).optional(),
    /** Hosts this agent's sessions may reach through the egress proxies (added to ash.json's). */
    egress: z.array(egressHost).max(500).optional(),
    /** Default token budget of each of its sessions. */
    maxTokens: z.number().int().min(1).optional(),
  })
  .strict();

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

export function registerAgents(app: H3, ctx: AppContext): void {
  app.post("/api/agents", async (event) => {
    const body = validate(deploySchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    if (!body.files === !body.path) throw badRequest('Give either "files" (an upload) or "path" (a folder in the data directory), not both.');
    // The whole upload is checked before anything is written.
    const files = body.files ? decodeUploadedFiles(body.files) : await readAgentFolder(ctx.config.dataDir, body.path!);
    const manifest = manifestOf(files);
    const egress = [...new Set([...(manifest.egress ?? []), ...(body.egress ?? [])])];
    const maxTokens = body.maxTokens ?? manifest.maxTokens;
    const settings = { ...(egress.length ? { egress } : {}), ...(maxTokens !== undefined ? { maxTokens } : {}) };
    // The folder under <data>/agents/ mirrors the latest version; the database holds them all.
    // A version is written whole or not at all: files staged first, then the rows, then the swap.
    const staged = await stageAgent(ctx.config.dataDir, body.name, files);
    let agent;
    try {
      agent = await deployAgent(ctx.db, { id: randomUUID(), name: body.name, env: body.env ?? {}, systemPrompt: body.systemPrompt ?? null, files, settings });
    } catch (error) {
      await staged.discard().catch(() => undefined);
      throw error;
    }
    try {
      await staged.commit();
    } catch (error) {
      await undoDeploy(ctx.db, agent).catch((undo) => ctx.log.error(`agent ${agent.name}: taking back version ${agent.version} failed:`, undo));
      throw error;
    }
    return new Response(JSON.stringify({ agent: presentAgent(agent) }), { status: 201, headers: { "content-type": "application/json; charset=utf-8" } });
  });

  app.get("/api/agents", async () => ({ agents: (await listAgents(ctx.db)).map(presentAgent) }));

  app.get("/api/agents/:name", async (event) => {
    const name = getRouterParam(event, "name")!;
    const agent = await getAgent(ctx.db, name);
    if (!agent) throw notFound(`No agent named "${name}".`);
    return { agent: presentAgent(agent) };
  });

  app.delete("/api/agents/:name", async (event) => {
    const name = getRouterParam(event, "name")!;
    const agent = await getAgent(ctx.db, name);
    if (!agent || !(await deleteAgent(ctx.db, name))) throw notFound(`No agent named "${name}".`);
    await removeAgentFolder(ctx.config.dataDir, name);
    return { agent: presentAgent(agent), deleted: true };
  });
}
