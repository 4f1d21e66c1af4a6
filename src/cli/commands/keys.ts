import { defineCommand } from "citty";
import { isNotFound, jsonArg, serverArgs, usageError, withServer, CliError } from "../errors";
import { line, note, printJson, printTable, style, timeAgo } from "../output";
import type { UsageLimits } from "../../client/types";
import { parsePositiveInt } from "./chat";

const SCOPES = ["read", "sessions", "admin"] as const;

/** The limit flags every command that sets limits takes. */
export const limitArgs = {
  "requests-per-minute": { type: "string", description: "Requests a minute", valueHint: "n" },
  "live-sessions": { type: "string", description: "Sessions live at once", valueHint: "n" },
  "running-turns": { type: "string", description: "Turns running at once", valueHint: "n" },
  "tokens-per-day": { type: "string", description: "Model tokens a day (UTC)", valueHint: "n" },
} as const;

export function limitsOf(args: Record<string, unknown>): UsageLimits | undefined {
  const limits: UsageLimits = {
    requestsPerMinute: parsePositiveInt(args["requests-per-minute"] as string | undefined, "--requests-per-minute"),
    liveSessions: parsePositiveInt(args["live-sessions"] as string | undefined, "--live-sessions"),
    runningTurns: parsePositiveInt(args["running-turns"] as string | undefined, "--running-turns"),
    tokensPerDay: parsePositiveInt(args["tokens-per-day"] as string | undefined, "--tokens-per-day"),
  };
  for (const key of Object.keys(limits) as Array<keyof UsageLimits>) if (limits[key] === undefined) delete limits[key];
  return Object.keys(limits).length ? limits : undefined;
}

export function describeLimits(limits: UsageLimits): string {
  const parts = [
    limits.requestsPerMinute && `${limits.requestsPerMinute}/min`,
    limits.liveSessions && `${limits.liveSessions} live`,
    limits.runningTurns && `${limits.runningTurns} turns`,
    limits.tokensPerDay && `${limits.tokensPerDay} tokens/day`,
  ].filter(Boolean);
  return parts.length ? parts.join(", ") : "-";
}

const create = defineCommand({
  meta: { name: "create", description: "Make an API key; prints the key (shown this once) on stdout" },
  args: {
    label: { type: "string", description: "What the key is for", valueHint: "text" },
    scope: { type: "string", description: `What it may do: ${SCOPES.join(", ")} (default sessions)`, valueHint: "scope" },
    tenant: { type: "string", description: "Its tenant (default: your key's; other tenants need the server's own key)", valueHint: "id" },
    expires: { type: "string", description: "When it stops working (ISO 8601 time)", valueHint: "time" },
    ...limitArgs,
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      if (args.scope && !(SCOPES as readonly string[]).includes(args.scope)) throw usageError(`--scope takes one of ${SCOPES.join(", ")}, not "${args.scope}".`);
      if (args.expires && Number.isNaN(Date.parse(args.expires))) throw usageError(`--expires takes an ISO 8601 time such as 2027-01-31T00:00:00Z, not "${args.expires}".`);
      const made = await client.createApiKey({
        label: args.label || undefined,
        scope: (args.scope || undefined) as (typeof SCOPES)[number] | undefined,
        tenant: args.tenant || undefined,
        expiresAt: args.expires ? new Date(args.expires).toISOString() : undefined,
        limits: limitsOf(args),
      });
      if (args.json) return printJson(made);
      line(made.key);
      note(style.dim(`Key ${made.id} (${made.scope}, tenant ${made.tenant}). It is shown only now: store it somewhere safe.`, process.stderr));
    }),
});

const list = defineCommand({
  meta: { name: "list", description: "List API keys (prefixes only)" },
  args: { tenant: { type: "string", description: "Only this tenant's (the server's own key sees all)", valueHint: "id" }, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const keys = await client.listApiKeys({ tenant: args.tenant || undefined });
      if (args.json) return printJson(keys);
      if (keys.length === 0) {
        note("No API keys made through the API yet; make one with `ash keys create`.");
        return;
      }
      printTable(
        ["ID", "PREFIX", "LABEL", "TENANT", "SCOPE", "LAST USED", "EXPIRES", "LIMITS"],
        keys.map((k) => [
          k.id,
          k.keyPrefix ?? "-",
          k.label,
          k.tenant,
          k.revoked ? `${k.scope} (revoked)` : k.scope,
          k.lastUsedAt ? timeAgo(k.lastUsedAt) : "never",
          k.expiresAt ?? "-",
          describeLimits(k.limits),
        ]),
      );
    }),
});

const revoke = defineCommand({
  meta: { name: "revoke", description: "Revoke an API key at once" },
  args: { id: { type: "positional", description: "Key id (from `ash keys list`)", required: true }, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      await client.revokeApiKey(args.id).catch((error) => {
        throw isNotFound(error) ? new CliError(`No API key with id "${args.id}"; \`ash keys list\` shows them.`) : error;
      });
      if (args.json) return printJson({ revoked: args.id });
      line(`Revoked API key ${args.id}; requests with it are refused from now on.`);
    }),
});

const limits = defineCommand({
  meta: { name: "limits", description: "Set an API key's limits (flags not given are cleared)" },
  args: { id: { type: "positional", description: "Key id", required: true }, ...limitArgs, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const key = await client.setApiKeyLimits(args.id, limitsOf(args) ?? {});
      if (args.json) return printJson(key);
      line(`Limits of ${key.id}: ${describeLimits(key.limits)}.`);
    }),
});

export default defineCommand({
  meta: { name: "keys", description: "Make, list and revoke API keys (scopes, tenants, limits)" },
  subCommands: { create, list, revoke, limits },
});
