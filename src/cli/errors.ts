import { AshClient } from "../client/client";
import { AshApiError, AshConnectionError, AshError } from "../client/errors";
import { AgentFolderError } from "./agent-folder";
import { exitWith, note, sentence, style } from "./output";
import { resolveServer } from "./settings";

/**
 * The CLI's error boundary: every command runs inside `withServer`, and whatever goes wrong
 * reaches the user as one sentence on stderr and a non-zero exit code, never a stack trace.
 */

/** A failure the command already phrased for the user. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "CliError";
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
 * file, then the default), runs `action`, and exits with its code (0 when it returns nothing).
 */
export async function withServer(
  args: { url?: string; "api-key"?: string; apiKey?: string },
  action: (ctx: ServerContext) => Promise<number | void>,
): Promise<never> {
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
      throw new CliError(`${(error as Error).message}`);
    }
    const code = await action({ client, url: server.url, hasKey });
    return await exitWith(code ?? 0);
  } catch (error) {
    note(style.red(describeError(error, { url, hasKey }), process.stderr));
    if (process.env.DEBUG && error instanceof Error && error.stack) note(style.dim(error.stack, process.stderr));
    return await exitWith(error instanceof CliError ? error.exitCode : 1);
  }
}

/** One sentence for any failure, naming what to do about it where we know. */
export function describeError(error: unknown, context: { url: string; hasKey: boolean }): string {
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
