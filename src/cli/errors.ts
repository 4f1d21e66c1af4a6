import { AshClient } from "../client/client";
import { AshApiError, AshConnectionError, AshError } from "../client/errors";
import { AgentFolderError } from "../agents/local-folder";
import { sentence } from "./output";
import { resolveServer } from "./settings";

/**
 * What can go wrong in a command, phrased for the user. Commands throw these
 * (or anything else); the boundary in ./boundary.ts prints one sentence and
 * exits with the code, never a stack trace.
 */

export const EXIT = {
  /** The operation failed (unhealthy server, busy port, missing image, ...). */
  FAILED: 1,
  /** A flag, value or input was wrong; nothing was changed. */
  USAGE: 2,
  /** Docker is not installed, not running or not reachable. */
  NO_DOCKER: 3,
} as const;

/** A failure the command already phrased for the user. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.FAILED,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "CliError";
  }
}

/** A bad flag or value: exit code 2, nothing changed. */
export function usageError(message: string): CliError {
  return new CliError(message, EXIT.USAGE);
}

/** Runs a renderer or parser on user input; its error becomes a usage error (exit 2). */
export function parseInput<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw usageError((error as Error).message);
  }
}

interface FlagDef {
  type?: string;
  alias?: string | string[];
}

/**
 * citty ignores flags it does not know, so `ash start --prot 8080` would quietly
 * start on 4100. The boundary calls this for every command: any option the
 * command does not define is refused.
 */
export function rejectUnknownFlags(rawArgs: readonly string[], defs: Record<string, FlagDef>, command: string): void {
  const kinds = new Map<string, string>();
  for (const [name, def] of Object.entries(defs)) {
    if (def.type === "positional") continue;
    const names = [name, ...(Array.isArray(def.alias) ? def.alias : def.alias ? [def.alias] : [])];
    for (const n of names) kinds.set(n, def.type ?? "string");
    if (def.type === "boolean") kinds.set(`no-${name}`, "boolean");
  }
  kinds.set("help", "boolean");
  kinds.set("h", "boolean");
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]!;
    if (arg === "--") break;
    if (!arg.startsWith("-") || arg === "-") continue;
    const long = arg.startsWith("--");
    const body = arg.slice(long ? 2 : 1);
    const eq = body.indexOf("=");
    // A short flag may carry its value attached (-eKEY=VALUE).
    const name = long ? (eq === -1 ? body : body.slice(0, eq)) : body[0]!;
    const attached = long ? eq !== -1 : body.length > 1;
    const kind = kinds.get(name);
    if (!kind) throw usageError(`Unknown option ${long ? `--${name}` : `-${name}`} for ash ${command}; see \`ash ${command} --help\`.`);
    if (kind !== "boolean" && !attached) i++;
  }
}

/** The flags every server command takes (citty passes them as strings). */
export const serverArgs = {
  url: { type: "string", description: "Server address (default: ASH_SERVER_URL, ~/.ash/config.json, http://localhost:4100)", valueHint: "url" },
  "api-key": { type: "string", description: "API key (default: ASH_API_KEY, ~/.ash/config.json)", valueHint: "key" },
} as const;

/** `--json`, for commands whose output is data. */
export const jsonArg = {
  json: { type: "boolean", description: "Print JSON instead of text" },
} as const;

export interface ServerContext {
  client: AshClient;
  url: string;
  /** Whether any API key was found (flag, environment or settings file). */
  hasKey: boolean;
}

/**
 * Resolves the server from the flags (then ASH_SERVER_URL / ASH_API_KEY, then the settings
 * file, then the default) and runs `action`; a failure is rethrown as one sentence that knows
 * which server and key were used.
 */
export async function withServer(
  args: { url?: string; "api-key"?: string; apiKey?: string },
  action: (ctx: ServerContext) => Promise<number | void>,
): Promise<number> {
  let url = args.url || process.env.ASH_SERVER_URL || "http://localhost:4100";
  let hasKey = false;
  try {
    const server = await resolveServer({ url: args.url || undefined, apiKey: args["api-key"] || args.apiKey || undefined });
    url = server.url;
    hasKey = Boolean(server.apiKey);
    let client: AshClient;
    try {
      client = new AshClient({ url: server.url, apiKey: server.apiKey });
    } catch (error) {
      throw usageError(`${(error as Error).message}`);
    }
    return (await action({ client, url: server.url, hasKey })) ?? 0;
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(describeError(error, { url, hasKey }), exitCodeOf(error), { cause: error });
  }
}

/** Bad input is 2 (nothing changed), everything else 1. */
function exitCodeOf(error: unknown): number {
  if (error instanceof CliError) return error.exitCode;
  if (error instanceof AgentFolderError) return EXIT.USAGE;
  if (error instanceof AshApiError && [400, 413, 422].includes(error.statusCode)) return EXIT.USAGE;
  return EXIT.FAILED;
}

/** One sentence for any failure, naming what to do about it where we know. */
export function describeError(error: unknown, context: { url: string; hasKey: boolean } = { url: "the server", hasKey: false }): string {
  if (error instanceof CliError || error instanceof AgentFolderError) return sentence(error.message);
  if (error instanceof AshConnectionError) return `No Ash server answers at ${error.url || context.url}; start it with \`ash start\`.`;
  if (error instanceof AshApiError) {
    if (error.statusCode === 401) return unauthorized(context);
    if (error.statusCode === 503 && error.retryAfter !== undefined) {
      return `${sentence(error.message)} Try again in ${error.retryAfter} s.`;
    }
    return sentence(error.message);
  }
  if (error instanceof AshError) return sentence(error.message);
  if (error instanceof Error && error.name === "AbortError") return "Cancelled.";
  const message = error instanceof Error ? error.message : String(error);
  return `Unexpected error: ${sentence(message)}`;
}

function unauthorized(context: { url: string; hasKey: boolean }): string {
  const how = "pass it with `--api-key`, set `ASH_API_KEY`, or run `ash start`, which saves it to ~/.ash/config.json";
  return context.hasKey
    ? `The server at ${context.url} rejected the API key; ${how}.`
    : `The server at ${context.url} needs an API key; ${how}.`;
}

/** Is this the server saying the thing we asked for does not exist? */
export function isNotFound(error: unknown): error is AshApiError {
  return error instanceof AshApiError && error.statusCode === 404;
}

/** The sentence for an agent name the server does not know, listing the ones it does. */
export async function unknownAgent(client: AshClient, name: string): Promise<CliError> {
  let names: string[] = [];
  try {
    names = (await client.listAgents()).map((a) => a.name).sort();
  } catch {
    // Listing is a courtesy; the main message stands without it.
  }
  if (names.length === 0) {
    return new CliError(`No agent named "${name}" is deployed, and there are none yet; deploy one with \`ash deploy <folder>\`.`);
  }
  const shown = names.length > 20 ? [...names.slice(0, 20), `and ${names.length - 20} more`] : names;
  return new CliError(`No agent named "${name}" is deployed; deployed agents: ${shown.join(", ")}.`);
}

/** The sentence for a session id the server does not know. */
export function unknownSession(id: string): CliError {
  return new CliError(`No session with id "${id}"; list them with \`ash session list\`.`);
}
