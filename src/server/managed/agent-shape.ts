import { z } from "zod";
import type { AgentFile, AgentSettings } from "../../db/queries/agents";
import { badRequest } from "../errors";
import { confirmationCovers } from "../../runtime/agent-session";

/**
 * How a /v1 agent's fields map onto an Ash agent folder, which is what a
 * session actually runs: `system` is CLAUDE.md (or the appended prompt of a
 * folder deployed with its own CLAUDE.md), `mcp_servers` is .mcp.json,
 * `tools` and `model` are .claude/settings.json (permissions.deny, model).
 * What has no file (description, metadata, the tools as given) is kept in
 * the version's settings, so every version says what it was made from.
 */

/** The built-in toolset's tools and the Claude Code tools they are. */
export const TOOLSET: Record<string, string> = {
  bash: "Bash",
  edit: "Edit",
  read: "Read",
  write: "Write",
  glob: "Glob",
  grep: "Grep",
  web_fetch: "WebFetch",
  web_search: "WebSearch",
};
const TOOLSET_NAMES = Object.keys(TOOLSET) as [string, ...string[]];

// always_ask holds the tool until a user.tool_confirmation (the agent's confirmTools).
const policySchema = z
  .object({ type: z.string() })
  .passthrough()
  .nullable()
  .optional()
  .refine((p) => !p || p.type === "always_allow" || p.type === "always_ask", "permission_policy.type must be always_allow or always_ask");
const toolConfigSchema = z.object({ name: z.enum(TOOLSET_NAMES), enabled: z.boolean().nullable().optional(), permission_policy: policySchema }).strict();
const mcpToolConfigSchema = z.object({ name: z.string().min(1).max(128), enabled: z.boolean().nullable().optional(), permission_policy: policySchema }).strict();
const defaultConfigSchema = z.object({ enabled: z.boolean().nullable().optional(), permission_policy: policySchema }).strict().nullable().optional();

export const toolSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("agent_toolset_20260401"), configs: z.array(toolConfigSchema).max(256).optional(), default_config: defaultConfigSchema }).strict(),
  z.object({ type: z.literal("mcp_toolset"), mcp_server_name: z.string().min(1).max(255), configs: z.array(mcpToolConfigSchema).max(256).optional(), default_config: defaultConfigSchema }).strict(),
  z.object({ type: z.literal("custom"), name: z.string(), description: z.string(), input_schema: z.unknown() }).passthrough(),
]);
export type ToolParam = z.infer<typeof toolSchema>;

export const mcpServerSchema = z
  .object({
    name: z.string().min(1).max(255).regex(/^[A-Za-z0-9_-]+$/, "must be letters, digits, - and _"),
    type: z.literal("url"),
    url: z.string().url().max(2048).refine((u) => /^https?:\/\//i.test(u), "must be an http or https URL"),
  })
  .strict();
export type McpServerParam = z.infer<typeof mcpServerSchema>;

export const modelSchema = z.union([
  z.string().min(1).max(200),
  // The CLI picks effort and speed itself: asking for them is refused rather than ignored.
  z.object({ id: z.string().min(1).max(200), speed: z.literal("standard", 'only "standard" is available on this server').nullable().optional() }).strict(),
]);

export const skillsSchema = z.array(z.object({ type: z.string(), skill_id: z.string() }).passthrough()).max(0, "skills are not available on this server: put what a skill would add in the agent's folder (CLAUDE.md, .claude/) with ash deploy");

/** What a /v1 agent keeps beyond its files, in its version's settings. */
export interface ManagedAgentFields {
  description: string | null;
  metadata: Record<string, string>;
  model: string | null;
  /** The tools as given (checked); absent: every built-in tool, as Claude Code has by default. */
  tools?: ToolParam[];
  mcpServers: McpServerParam[];
}

export function managedFieldsOf(settings: AgentSettings): ManagedAgentFields | undefined {
  return (settings as { managedApi?: ManagedAgentFields }).managedApi;
}

export function withManagedFields(settings: AgentSettings, fields: ManagedAgentFields): AgentSettings {
  const next = { ...settings, managedApi: fields } as AgentSettings;
  // The tools' always_ask policies are the agent's confirmTools; without tools, an /api policy stays.
  if (fields.tools !== undefined) {
    const asked = askedTools(fields.tools);
    if (asked.length > 0) next.confirmTools = asked;
    else delete next.confirmTools;
  }
  return next;
}

/** Refuses what cannot run here, with the reason; checks MCP toolsets name a server. */
export function checkTools(tools: ToolParam[], servers: McpServerParam[]): void {
  const names = new Set(servers.map((s) => s.name));
  for (const [i, tool] of tools.entries()) {
    if (tool.type === "custom") throw badRequest(`tools.${i}: custom tools (answered by the client with user.custom_tool_result) are not available on this server; give the agent an MCP server instead.`);
    if (tool.type === "mcp_toolset" && !names.has(tool.mcp_server_name)) throw badRequest(`tools.${i}.mcp_server_name: "${tool.mcp_server_name}" is not one of the agent's mcp_servers.`);
  }
  if (new Set(servers.map((s) => s.name)).size !== servers.length) throw badRequest("mcp_servers: two servers have the same name.");
}

/** Claude Code tools the agent may not use: built-in ones switched off, MCP servers whose tools are off. */
export function deniedTools(tools: ToolParam[] | undefined): string[] {
  if (tools === undefined) return [];
  const denied: string[] = [];
  const toolset = tools.find((t) => t.type === "agent_toolset_20260401");
  for (const [name, cc] of Object.entries(TOOLSET)) {
    if (!toolset || toolset.type !== "agent_toolset_20260401") {
      denied.push(cc);
      continue;
    }
    const own = toolset.configs?.find((c) => c.name === name)?.enabled;
    const enabled = own ?? toolset.default_config?.enabled ?? true;
    if (!enabled) denied.push(cc);
  }
  for (const tool of tools) {
    if (tool.type !== "mcp_toolset") continue;
    if (tool.default_config?.enabled === false) denied.push(`mcp__${tool.mcp_server_name}`);
    for (const c of tool.configs ?? []) if (c.enabled === false) denied.push(`mcp__${tool.mcp_server_name}__${c.name}`);
  }
  return denied;
}

type Policy = { type: string } | null | undefined;
const asks = (own: Policy, fallback: Policy) => (own ?? fallback)?.type === "always_ask";

/**
 * The Claude Code tools the agent's sessions hold for a user.tool_confirmation:
 * built-in tools and MCP tools whose policy (their own, else their toolset's
 * default) is always_ask; a whole MCP server as `mcp__<server>`.
 */
export function askedTools(tools: ToolParam[]): string[] {
  const asked: string[] = [];
  for (const tool of tools) {
    if (tool.type === "agent_toolset_20260401") {
      for (const [name, cc] of Object.entries(TOOLSET)) if (asks(tool.configs?.find((c) => c.name === name)?.permission_policy, tool.default_config?.permission_policy)) asked.push(cc);
    } else if (tool.type === "mcp_toolset") {
      if (tool.default_config?.permission_policy?.type === "always_ask") {
        // Every tool of the server asks, except those a config lets through.
        const allowed = (tool.configs ?? []).filter((c) => c.permission_policy?.type === "always_allow");
        if (allowed.length === 0) asked.push(`mcp__${tool.mcp_server_name}`);
        else throw badRequest(`tools: mcp_toolset "${tool.mcp_server_name}" asks by default but lets some tools through; name the tools that ask in configs instead.`);
      } else for (const c of tool.configs ?? []) if (c.permission_policy?.type === "always_ask") asked.push(`mcp__${tool.mcp_server_name}__${c.name}`);
    }
  }
  return asked;
}

/** The tools as the API shows them (every setting resolved); `confirmTools`: the agent's policy, whatever API set it. */
export function presentTools(tools: ToolParam[] | undefined, confirmTools?: "all" | string[]): unknown[] {
  const allow = { type: "always_allow" };
  const policyOf = (cc: string) => (confirmationCovers(confirmTools, cc) ? { type: "always_ask" } : allow);
  if (tools === undefined) {
    return [{ type: "agent_toolset_20260401", default_config: { enabled: true, permission_policy: confirmTools === "all" ? { type: "always_ask" } : allow }, configs: TOOLSET_NAMES.map((name) => ({ name, enabled: true, permission_policy: policyOf(TOOLSET[name]!) })) }];
  }
  return tools.map((tool) => {
    if (tool.type === "agent_toolset_20260401") {
      const enabled = tool.default_config?.enabled ?? true;
      return {
        type: tool.type,
        default_config: { enabled, permission_policy: tool.default_config?.permission_policy ?? allow },
        configs: TOOLSET_NAMES.map((name) => ({ name, enabled: tool.configs?.find((c) => c.name === name)?.enabled ?? enabled, permission_policy: policyOf(TOOLSET[name]!) })),
      };
    }
    if (tool.type === "mcp_toolset") {
      const enabled = tool.default_config?.enabled ?? true;
      return {
        type: tool.type,
        mcp_server_name: tool.mcp_server_name,
        default_config: { enabled, permission_policy: tool.default_config?.permission_policy ?? allow },
        configs: (tool.configs ?? []).map((c) => ({ name: c.name, enabled: c.enabled ?? enabled, permission_policy: policyOf(`mcp__${tool.mcp_server_name}__${c.name}`) })),
      };
    }
    return tool;
  });
}

const SETTINGS_FILE = ".claude/settings.json";
const MCP_FILE = ".mcp.json";

function parseJsonFile(files: AgentFile[], path: string): Record<string, any> {
  const file = files.find((f) => f.path === path);
  if (!file) return {};
  try {
    const parsed = JSON.parse(file.content.toString("utf8"));
    return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
  } catch {
    throw badRequest(`The agent's ${path} is not valid JSON; fix it with ash deploy before changing tools, model or MCP servers here.`);
  }
}

const jsonFile = (path: string, value: unknown): AgentFile => ({ path, mode: 0o644, content: Buffer.from(JSON.stringify(value, null, 2) + "\n", "utf8") });

/**
 * The files that carry tools, model and MCP servers, merged into what the
 * folder already has: only the entries these fields own are replaced (the
 * previous version's denials, the servers it named); the rest is kept.
 */
export function folderFiles(files: AgentFile[], previous: ManagedAgentFields | undefined, next: ManagedAgentFields): AgentFile[] {
  const out: AgentFile[] = [];
  const settings = parseJsonFile(files, SETTINGS_FILE);
  const before = new Set(deniedTools(previous?.tools));
  const permissions = settings.permissions && typeof settings.permissions === "object" ? { ...settings.permissions } : {};
  const kept = Array.isArray(permissions.deny) ? permissions.deny.filter((d: unknown) => typeof d === "string" && !before.has(d)) : [];
  const deny = [...new Set([...kept, ...deniedTools(next.tools)])];
  const nextSettings: Record<string, unknown> = { ...settings, permissions: { ...permissions, deny } };
  if (deny.length === 0) delete (nextSettings.permissions as Record<string, unknown>).deny;
  if (Object.keys(nextSettings.permissions as object).length === 0) delete nextSettings.permissions;
  if (next.model) nextSettings.model = next.model;
  else if (previous?.model && settings.model === previous.model) delete nextSettings.model;
  if (next.mcpServers.length > 0) nextSettings.enableAllProjectMcpServers = true;
  if (Object.keys(nextSettings).length > 0 || files.some((f) => f.path === SETTINGS_FILE)) out.push(jsonFile(SETTINGS_FILE, nextSettings));

  const mcp = parseJsonFile(files, MCP_FILE);
  const servers: Record<string, unknown> = mcp.mcpServers && typeof mcp.mcpServers === "object" ? { ...mcp.mcpServers } : {};
  for (const s of previous?.mcpServers ?? []) delete servers[s.name];
  for (const s of next.mcpServers) servers[s.name] = { type: "http", url: s.url };
  if (Object.keys(servers).length > 0 || files.some((f) => f.path === MCP_FILE)) out.push(jsonFile(MCP_FILE, { ...mcp, mcpServers: servers }));
  return out;
}

/** URL servers of a folder's .mcp.json (an agent deployed with ash deploy). */
export function mcpServersOfFolder(file: AgentFile | undefined): McpServerParam[] {
  if (!file) return [];
  try {
    const parsed = JSON.parse(file.content.toString("utf8"));
    return Object.entries(parsed?.mcpServers ?? {}).flatMap(([name, s]: [string, any]) =>
      typeof s?.url === "string" && (s.type === "http" || s.type === "sse") ? [{ name, type: "url" as const, url: s.url }] : [],
    );
  } catch {
    return [];
  }
}
