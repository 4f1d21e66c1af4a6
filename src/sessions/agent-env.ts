import type { ServerConfig } from "../config";

/**
 * The whole environment of a session's CLI process. It starts empty, never
 * from the server's own environment, so server secrets (ASH_API_KEY,
 * ASH_DATABASE_URL, other sessions' keys) cannot reach a session.
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
  if (config.anthropicApiKey) env.ANTHROPIC_API_KEY = config.anthropicApiKey;
  if (config.anthropicBaseUrl) env.ANTHROPIC_BASE_URL = config.anthropicBaseUrl;
  return { ...env, ...input.agentEnv, ...input.extraEnv };
}
