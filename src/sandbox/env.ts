import { SANDBOX_PATH } from "./executables";

export type EnvMap = Record<string, string | undefined>;

/** Where a sandbox keeps its private state; fixed in its environment. */
export interface SandboxDirs {
  homeDir: string;
  configDir: string;
}

/**
 * Names taken from the environment the Agent SDK hands to the CLI (which is
 * the runtime's `env` option, or the whole server environment when the
 * runtime gave none). Everything else there is dropped, so server secrets
 * such as ASH_API_KEY or ASH_DATABASE_URL never reach a sandbox.
 */
const PASSED_NAMES = new Set(["TRACEPARENT", "TRACESTATE", "BUN_ENABLE_CRASH_REPORTING"]);
/** ANTHROPIC_* carries the model endpoint and the key the session uses. */
const PASSED_PREFIXES = ["ANTHROPIC_", "CLAUDE_CODE_", "CLAUDE_AGENT_SDK_", "OTEL_"];

/** True for a variable the runtime may pass through to a sandboxed CLI. */
export function isPassedThrough(name: string): boolean {
  return PASSED_NAMES.has(name) || PASSED_PREFIXES.some((prefix) => name.startsWith(prefix));
}

/**
 * The model key and the CLI's own settings (ANTHROPIC_*, CLAUDE_CODE_*,
 * CLAUDE_AGENT_SDK_*) are for the agent's CLI only. A sandbox's declared
 * variables may carry them (the server's key, an agent-level key), so they
 * are taken out before a command that is not the CLI (exec) starts.
 */
export function withoutModelSettings(env: EnvMap): EnvMap {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !MODEL_PREFIXES.some((prefix) => name.startsWith(prefix))));
}
const MODEL_PREFIXES = ["ANTHROPIC_", "CLAUDE_CODE_", "CLAUDE_AGENT_SDK_"];

/** Variables the sandbox defines itself; nothing overrides them. */
const FIXED_NAMES = new Set(["HOME", "TMPDIR", "CLAUDE_CONFIG_DIR"]);

const VALID_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Builds a sandboxed process's whole environment:
 * 1. a base (PATH of system dirs, HOME, TMPDIR, LANG, TERM, CLAUDE_CONFIG_DIR);
 * 2. the allowlisted names from `passed` (the SDK's env for the CLI);
 * 3. `declared`: the agent's and session's own variables, as given.
 * HOME, TMPDIR and CLAUDE_CONFIG_DIR always point at the sandbox's own dirs.
 */
export function buildSandboxEnv(options: {
  dirs: SandboxDirs;
  passed?: EnvMap;
  declared?: EnvMap;
  /** Where LANG and TERM defaults come from; the server's env by default. */
  host?: EnvMap;
}): Record<string, string> {
  const host = options.host ?? process.env;
  const env: Record<string, string> = {
    PATH: SANDBOX_PATH,
    LANG: host.LANG || "C.UTF-8",
    TERM: host.TERM || "dumb",
  };
  for (const [name, value] of Object.entries(options.passed ?? {})) {
    if (value !== undefined && isPassedThrough(name)) env[name] = value;
  }
  for (const [name, value] of Object.entries(options.declared ?? {})) {
    if (value === undefined) continue;
    if (!VALID_NAME.test(name)) throw new Error(`Invalid environment variable name: ${JSON.stringify(name)}`);
    if (FIXED_NAMES.has(name)) continue;
    if (value.includes("\0")) throw new Error(`Environment variable ${name} contains a NUL byte`);
    env[name] = value;
  }
  env.HOME = options.dirs.homeDir;
  env.TMPDIR = "/tmp";
  env.CLAUDE_CONFIG_DIR = options.dirs.configDir;
  return env;
}
