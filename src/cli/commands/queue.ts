import { defineCommand } from "citty";
import { isQueueStatus, QUEUE_STATUSES } from "../../contract";
import type { QueueItem, QueueStatus } from "../../client/types";
import { jsonArg, serverArgs, usageError, withServer } from "../errors";
import { line, note, printFields, printJson, printTable, style, timeAgo, truncate } from "../output";
import { parsePositiveInt } from "./chat";

const idArg = { id: { type: "positional", description: "Queue item id", required: true } } as const;

/** A whole number, negative allowed, within [min, max]. */
function parseInteger(value: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (value === undefined || value === "") return undefined;
  if (!/^-?\d+$/.test(value) || Number(value) < min || Number(value) > max) throw usageError(`${flag} takes a whole number from ${min} to ${max}, not "${value}".`);
  return Number(value);
}

function printItem(item: QueueItem): void {
  printFields([
    ["Id", item.id],
    ["Agent", item.agent],
    ["Status", item.status],
    ["Priority", item.priority],
    ["Attempts", `${item.attempts} of at most ${item.maxRetries + 1}`],
    ["Session", item.sessionId ?? undefined],
    ["Prompt", truncate(item.prompt.replace(/\s+/g, " "), 200)],
    ["Next attempt", item.nextAttemptAt ?? undefined],
    ["Error", item.error ?? undefined],
    ["Created", `${item.createdAt} (${timeAgo(item.createdAt)})`],
    ["Completed", item.completedAt ?? undefined],
  ]);
  if (item.result !== null) {
    line("");
    line(item.result);
  }
}

const add = defineCommand({
  meta: { name: "add", description: "Queue a prompt for an agent; prints the item's id" },
  args: {
    agent: { type: "positional", description: "Name of a deployed agent", required: true },
    prompt: { type: "positional", description: "The prompt", required: true },
    session: { type: "string", description: "Continue this session instead of starting a new one", valueHint: "id" },
    priority: { type: "string", description: "Higher runs first (-1000 to 1000, default 0)", valueHint: "n" },
    "max-retries": { type: "string", description: "Retries after a failure (0 to 20, default 3)", valueHint: "n" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      if (!args.prompt.trim()) throw usageError("The prompt is empty; write something to queue.");
      const item = await client.enqueue({
        agent: args.agent,
        prompt: args.prompt,
        sessionId: args.session || undefined,
        priority: parseInteger(args.priority, "--priority", -1000, 1000),
        maxRetries: parseInteger(args["max-retries"], "--max-retries", 0, 20),
      });
      if (args.json) return printJson(item);
      line(item.id);
      note(style.dim(`Queued for ${item.agent}; follow it with \`ash queue get ${item.id}\`.`, process.stderr));
    }),
});

const list = defineCommand({
  meta: { name: "list", description: "List queue items, newest first" },
  args: {
    status: { type: "string", description: `Only items with this status (${QUEUE_STATUSES.join(", ")})`, valueHint: "status" },
    agent: { type: "string", description: "Only items of this agent", valueHint: "name" },
    limit: { type: "string", description: "How many to show (default 50)", valueHint: "n" },
    cursor: { type: "string", description: "Continue after a previous page", valueHint: "cursor" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      if (args.status && !isQueueStatus(args.status)) throw usageError(`"${args.status}" is not a queue status; use one of ${QUEUE_STATUSES.join(", ")}.`);
      const page = await client.listQueue({
        status: (args.status || undefined) as QueueStatus | undefined,
        agent: args.agent || undefined,
        limit: parsePositiveInt(args.limit, "--limit"),
        cursor: args.cursor || undefined,
      });
      if (args.json) return printJson(page);
      if (page.items.length === 0) {
        note(args.status || args.agent || args.cursor ? "No queue items match." : "The queue is empty; add a prompt with `ash queue add <agent> <prompt>`.");
        return;
      }
      printTable(
        ["ID", "AGENT", "STATUS", "PRIORITY", "ATTEMPTS", "CREATED", "PROMPT"],
        page.items.map((i) => [i.id, i.agent, i.status, String(i.priority), String(i.attempts), timeAgo(i.createdAt), i.prompt.replace(/\s+/g, " ")]),
      );
      if (page.nextCursor) note(style.dim(`More: ash queue list --cursor ${page.nextCursor}`, process.stderr));
    }),
});

const get = defineCommand({
  meta: { name: "get", description: "Show one queue item, with its result once it has one" },
  args: { ...idArg, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const item = await client.getQueueItem(args.id);
      if (args.json) return printJson(item);
      printItem(item);
    }),
});

const cancel = defineCommand({
  meta: { name: "cancel", description: "Cancel a pending or running queue item" },
  args: { ...idArg, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const item = await client.cancelQueueItem(args.id);
      if (args.json) return printJson(item);
      line(`Cancelled ${item.id}.`);
    }),
});

const stats = defineCommand({
  meta: { name: "stats", description: "How many queue items have each status" },
  args: { ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const s = await client.queueStats();
      if (args.json) return printJson(s);
      printTable(
        ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TOTAL"],
        [[s.pending, s.running, s.completed, s.failed, s.cancelled, s.total].map(String)],
      );
      note(style.dim(`This server runs ${s.runningHere} of at most ${s.concurrency} at once.`, process.stderr));
    }),
});

export default defineCommand({
  meta: { name: "queue", description: "Queue prompts for agents and follow them" },
  subCommands: { add, list, get, cancel, stats },
});
