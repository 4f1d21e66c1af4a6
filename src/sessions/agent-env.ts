import type { ServerConfig } from "../config";
import type { ModelUpstream } from "../gateway/gateway";
import { parseCloudCredential } from "../gateway/cloud-credentials";

/** Variables that carry the model key and endpoint: the gateway uses them, the sandbox never sees them. */
export const MODEL_ACCESS_NAMES = ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"] as const;

/**
 * The whole environment of a session's CLI process, without any model key.
 * It starts empty, never from the server's own environment, so server
 * secrets (ASH_API_KEY, ASH_DATABASE_URL, other sessions' keys) cannot reach
 * a session. The key and endpoint (the server's, or the agent's and
 * session's own ANTHROPIC_* variables) go to the model gateway instead
 * (modelUpstreamOf); the sandbox gets a session token for it.
 */
export function buildAgentEnv(input: { config: ServerConfig; agentEnv: Record<string, string>; extraEnv: Record<string, string> }): Record<string, string> {
  const { config } = input;
  const env: Record<string, string> = {
    PATH: "/usr/local/bin:/usr/bin:/bin",
    LANG: "C.UTF-8",
    TERM: "dumb",
    // Only model traffic leaves the sandbox: no telemetry, updates or error reports.
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
    DISABLE_AUTOUPDATER: "1",
    // A failing model ends the turn in seconds instead of minutes of retries.
    CLAUDE_CODE_MAX_RETRIES: String(config.modelMaxRetries),
    // The session runs inside our sandbox; this lets the CLI accept bypassPermissions.
    IS_SANDBOX: "1",
  };
  const merged = { ...env, ...input.agentEnv, ...input.extraEnv };
  for (const name of MODEL_ACCESS_NAMES) delete merged[name];
  return merged;
}

/**
 * What is wrong with the model endpoint an agent's or session's own variables
 * name, if anything. An ANTHROPIC_BASE_URL there goes only with a key named
 * beside it: the server's key and stored credentials are sent to the server's
 * own endpoint and nowhere else.
 */
export function modelEndpointProblem(env: Record<string, string | null | undefined>): string | undefined {
  const url = env.ANTHROPIC_BASE_URL;
  if (!url) return undefined;
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) return "ANTHROPIC_BASE_URL must be an http:// or https:// URL";
  if (!env.ANTHROPIC_API_KEY && !env.ANTHROPIC_AUTH_TOKEN) {
    return "ANTHROPIC_BASE_URL needs ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN beside it: the server's key and stored credentials go only to the server's own model endpoint";
  }
  return undefined;
}

/**
 * Where the gateway sends this session's calls and with which key: the
 * session's stored credential, else the session's, the agent's, else the
 * server's. An endpoint goes with its key: the session's or agent's own
 * ANTHROPIC_BASE_URL only with the key beside it, else the server's endpoint
 * (a tenant could otherwise send the server's key, or a credential stored by
 * an admin, to a host of its own).
 */
export function modelUpstreamOf(input: {
  config: ServerConfig;
  agentEnv: Record<string, string>;
  extraEnv: Record<string, string>;
  /** An opened `anthropic`, `bedrock` or `vertex` credential (src/vault). */
  credential?: { id: string; value: string; type?: string };
}): ModelUpstream {
  const { config, agentEnv, extraEnv } = input;
  const own = (env: Record<string, string>) => Boolean(env.ANTHROPIC_API_KEY || env.ANTHROPIC_AUTH_TOKEN);
  const source = own(extraEnv) ? { env: extraEnv, keyId: "session" } : own(agentEnv) ? { env: agentEnv, keyId: "agent" } : undefined;
  const baseUrl = config.anthropicBaseUrl || "https://api.anthropic.com";
  const cloud = input.credential?.type;
  if (input.credential && (cloud === "bedrock" || cloud === "vertex")) {
    return { baseUrl, keyId: `credential:${input.credential.id}`, cloud: parseCloudCredential(cloud, input.credential.value, input.credential.id) };
  }
  if (input.credential) {
    // OAuth tokens go as a bearer token, API keys as x-api-key.
    const oauth = input.credential.value.startsWith("sk-ant-oat");
    return { baseUrl, apiKey: oauth ? undefined : input.credential.value, authToken: oauth ? input.credential.value : undefined, keyId: `credential:${input.credential.id}` };
  }
  if (source) {
    const own = source.env.ANTHROPIC_BASE_URL;
    return {
      baseUrl: own || baseUrl,
      apiKey: source.env.ANTHROPIC_API_KEY || undefined,
      authToken: source.env.ANTHROPIC_AUTH_TOKEN || undefined,
      keyId: source.keyId,
      ...(own ? { tenantEndpoint: { allowPrivate: config.egress.allowPrivate } } : {}),
    };
  }
  return { baseUrl, apiKey: config.anthropicApiKey, keyId: config.anthropicApiKey ? "server" : "none" };
}
