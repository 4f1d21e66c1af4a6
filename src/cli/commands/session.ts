import { createWriteStream } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { defineCommand } from "citty";
import { isSessionStatus, SESSION_STATUSES } from "../../contract";
import type { AshClient } from "../../client/client";
import type { TokenUsage } from "../../client/events";
import type { Session, SessionStatus, StoredMessage } from "../../client/types";
import { CliError, isNotFound, jsonArg, serverArgs, unknownAgent, unknownSession, usageError, withServer } from "../errors";
import { formatBytes, line, note, printFields, printJson, printTable, resultText, style, terminalWidth, timeAgo, toolLine, truncate, turnSummary } from "../output";
import { interruptOnSigint, parsePositiveInt, TurnControl, turnExitCode } from "./chat";

const idArg = { id: { type: "positional", description: "Session id", required: true } } as const;

/** A 404 on a call about a session: say "no such session" when that is the reason, else pass the server's sentence on. */
async function explainNotFound(client: AshClient, id: string, error: unknown): Promise<unknown> {
  if (!isNotFound(error)) return error;
  try {
    await client.getSession(id);
    return error;
  } catch (lookup) {
    return isNotFound(lookup) ? unknownSession(id) : error;
  }
}

/** Runs `call` for session `id`, turning "not found" into a sentence about the id. */
async function forSession<T>(client: AshClient, id: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw await explainNotFound(client, id, error);
  }
}

function sessionRow(s: Session): string[] {
  return [s.id, s.agentName, s.status, timeAgo(s.lastActiveAt), timeAgo(s.createdAt)];
}

function printSession(s: Session): void {
  printFields([
    ["Id", s.id],
    ["Agent", s.agentName],
    ["Status", s.status],
    ["Model", s.model ?? undefined],
    ["Sandbox", s.sandboxId ?? undefined],
    ["Forked from", s.parentSessionId ?? undefined],
    ["Created", `${s.createdAt} (${timeAgo(s.createdAt)})`],
    ["Last active", `${s.lastActiveAt} (${timeAgo(s.lastActiveAt)})`],
  ]);
}


const create = defineCommand({
  meta: { name: "create", description: "Start a session with a deployed agent; prints its id" },
  args: {
    agent: { type: "positional", description: "Name of a deployed agent", required: true },
    model: { type: "string", description: "Model for this session", valueHint: "model" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const session = await client.createSession({ agent: args.agent, ...(args.model ? { model: args.model } : {}) }).catch(async (error) => {
        throw isNotFound(error) ? await unknownAgent(client, args.agent) : error;
      });
      if (args.json) return printJson(session);
      line(session.id);
      note(style.dim(`Session for ${session.agentName} is ${session.status}; talk to it with \`ash session send ${session.id} "…"\`.`, process.stderr));
    }),
});

const send = defineCommand({
  meta: {
    name: "send",
    description: "Send a message and stream the answer (text on stdout; tool calls and the summary on stderr)",
  },
  args: {
    ...idArg,
    message: { type: "positional", description: "The message", required: true },
    model: { type: "string", description: "Model for this turn", valueHint: "model" },
    "max-turns": { type: "string", description: "Most model turns for this message", valueHint: "n" },
    json: { type: "boolean", description: "Print the raw events as JSON lines" },
    ...serverArgs,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const maxTurns = parsePositiveInt(args["max-turns"], "--max-turns");
      if (!args.message.trim()) throw usageError("The message is empty; write something to send.");
      const control = new TurnControl(client, args.id, { json: args.json, model: args.model || undefined, maxTurns });
      const stop = interruptOnSigint(control);
      try {
        return turnExitCode(await forSession(client, args.id, () => control.send(args.message)));
      } finally {
        stop();
      }
    }),
});

const list = defineCommand({
  meta: { name: "list", description: "List sessions, newest first" },
  args: {
    agent: { type: "string", description: "Only sessions of this agent", valueHint: "name" },
    status: { type: "string", description: `Only sessions with this status (${SESSION_STATUSES.join(", ")})`, valueHint: "status" },
    limit: { type: "string", description: "How many to show (default: the server's page size)", valueHint: "n" },
    cursor: { type: "string", description: "Continue after a previous page", valueHint: "cursor" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      if (args.status && !isSessionStatus(args.status)) {
        throw usageError(`"${args.status}" is not a session status; use one of ${SESSION_STATUSES.join(", ")}.`);
      }
      const page = await client.listSessions({
        agent: args.agent || undefined,
        status: (args.status || undefined) as SessionStatus | undefined,
        limit: parsePositiveInt(args.limit, "--limit"),
        cursor: args.cursor || undefined,
      });
      if (args.json) return printJson(page);
      if (page.sessions.length === 0) {
        note(args.cursor || args.agent || args.status ? "No sessions match." : "No sessions yet; start one with `ash session create <agent>` or `ash chat <agent>`.");
        return;
      }
      printTable(["ID", "AGENT", "STATUS", "LAST ACTIVE", "CREATED"], page.sessions.map(sessionRow));
      if (page.nextCursor) note(style.dim(`More: ash session list --cursor ${page.nextCursor}`, process.stderr));
    }),
});

const info = defineCommand({
  meta: { name: "info", description: "Show one session" },
  args: { ...idArg, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const session = await forSession(client, args.id, () => client.getSession(args.id));
      if (args.json) return printJson(session);
      printSession(session);
    }),
});

/** pause, resume, stop, end: one call, then the session's new status. */
function lifecycle(name: string, description: string, call: (client: AshClient, id: string) => Promise<Session>) {
  return defineCommand({
    meta: { name, description },
    args: { ...idArg, ...serverArgs, ...jsonArg },
    run: ({ args }) =>
      withServer(args, async ({ client }) => {
        const session = await forSession(client, args.id, () => call(client, args.id));
        if (args.json) return printJson(session);
        line(`Session ${session.id} is ${session.status}.`);
      }),
  });
}

const fork = defineCommand({
  meta: { name: "fork", description: "Copy a session (history, conversation and workspace) into a new one; prints the new id" },
  args: {
    ...idArg,
    checkpoint: { type: "string", description: "Fork as the session was after this checkpoint (see `ash session checkpoints`)", valueHint: "n" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const checkpoint = parsePositiveInt(args.checkpoint, "--checkpoint");
      const session = await forSession(client, args.id, () => client.forkSession(args.id, { checkpoint }));
      if (args.json) return printJson(session);
      line(session.id);
      const at = checkpoint === undefined ? "" : ` at checkpoint ${checkpoint}`;
      note(style.dim(`Forked from ${args.id}${at}; the new session is ${session.status}.`, process.stderr));
    }),
});

const checkpoints = defineCommand({
  meta: { name: "checkpoints", description: "List a session's checkpoints: one per completed turn, to rewind or fork to" },
  args: { ...idArg, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const list = await forSession(client, args.id, () => client.listCheckpoints(args.id));
      if (args.json) return printJson(list);
      if (list.length === 0) {
        note("No checkpoints yet: one is made after each completed turn.");
        return;
      }
      const width = terminalWidth(process.stdout, 100);
      printTable(
        ["CHECKPOINT", "TURN", "WHEN", "FILES", "CHANGED", "PROMPT"],
        list.map((c) => [
          c.rewound ? `${c.checkpoint} (rewound)` : String(c.checkpoint),
          String(c.turn),
          timeAgo(c.createdAt),
          `${c.fileCount} · ${formatBytes(c.bytes)}`,
          `${c.filesChanged} · ${formatBytes(c.bytesChanged)}`,
          truncate((c.prompt ?? "(files saved between turns)").replace(/\s+/g, " "), Math.max(20, width - 60)),
        ]),
      );
    }),
});

const rewind = defineCommand({
  meta: { name: "rewind", description: "Move a session back to a checkpoint: files and conversation as after that turn" },
  args: {
    ...idArg,
    checkpoint: { type: "positional", description: "Checkpoint number (see `ash session checkpoints`)", required: true },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const checkpoint = parsePositiveInt(args.checkpoint, "the checkpoint")!;
      const session = await forSession(client, args.id, () => client.rewindSession(args.id, checkpoint));
      if (args.json) return printJson(session);
      line(`Rewound session ${args.id} to checkpoint ${checkpoint}; later messages stay in its history, marked rewound.`);
    }),
});

const interrupt = defineCommand({
  meta: { name: "interrupt", description: "Stop the turn running on a session" },
  args: { ...idArg, ...serverArgs },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const running = await forSession(client, args.id, () => client.interrupt(args.id));
      line(running ? `Interrupted the turn running on session ${args.id}.` : `No turn was running on session ${args.id}.`);
    }),
});

/** Message content as text: strings as they are, blocks as text and one line per tool call. */
export function messageLines(content: unknown, width: number): string[] {
  if (typeof content === "string") return [content];
  if (content && typeof content === "object" && !Array.isArray(content)) {
    const record = content as Record<string, unknown>;
    // A stored Agent SDK message: the blocks are under `message.content`.
    if (record.message && typeof record.message === "object") return messageLines((record.message as any).content, width);
    if (typeof record.text === "string") return [record.text];
    if ("content" in record) return messageLines(record.content, width);
    return [JSON.stringify(content)];
  }
  if (!Array.isArray(content)) return content === undefined || content === null ? [] : [String(content)];
  const out: string[] = [];
  for (const block of content) {
    if (!block || typeof block !== "object") continue;
    const b = block as Record<string, any>;
    if (b.type === "text" && typeof b.text === "string") out.push(b.text);
    else if (b.type === "tool_use") out.push(toolLine(String(b.name), b.input, width));
    else if (b.type === "tool_result") {
      const text = resultText(b.content).split("\n")[0] ?? "";
      out.push(truncate(`  ⎿ ${b.is_error ? "error: " : ""}${text}`, width));
    } else if (b.type === "image") out.push("[image]");
  }
  return out;
}

const history = defineCommand({
  meta: { name: "history", description: "Show the messages of a session" },
  args: {
    ...idArg,
    after: { type: "string", description: "Only messages after this sequence number", valueHint: "seq" },
    limit: { type: "string", description: "How many messages", valueHint: "n" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const after = args.after ? parsePositiveIntOrZero(args.after, "--after") : undefined;
      const messages: StoredMessage[] = await forSession(client, args.id, () =>
        client.listMessages(args.id, { after, limit: parsePositiveInt(args.limit, "--limit") }),
      );
      if (args.json) return printJson(messages);
      if (messages.length === 0) {
        note("No messages yet.");
        return;
      }
      const width = terminalWidth(process.stdout, 100);
      for (const message of messages) {
        // The end of a turn: one dim line with what it cost, not a message of its own.
        if (message.kind === "result") {
          const result = (message.data ?? {}) as { isError?: boolean; result?: string; usage?: TokenUsage; numTurns?: number };
          if (result.isError) line(style.red(truncate(`✗ ${result.result ?? "The turn failed."}`, width)));
          const summary = turnSummary(result.numTurns, result.usage ?? undefined);
          if (summary) line(style.dim(summary));
          continue;
        }
        line(style.dim(`── ${message.kind} · #${message.sequence} · ${timeAgo(message.createdAt)}`));
        for (const text of messageLines(message.data, width)) line(text);
      }
    }),
});

function parsePositiveIntOrZero(value: string, flag: string): number {
  if (!/^\d+$/.test(value)) throw usageError(`${flag} takes a whole number, not "${value}".`);
  return Number(value);
}

const files = defineCommand({
  meta: { name: "files", description: "List the workspace's files, or print one file" },
  args: {
    ...idArg,
    path: { type: "positional", description: "A file to print, or a folder to list", required: false },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const listing = await forSession(client, args.id, () => client.listFiles(args.id));
      const wanted = (args.path ?? "").replace(/^\.?\/+/, "").replace(/\/+$/, "");
      const exact = wanted ? listing.files.find((f) => f.path === wanted) : undefined;
      if (exact) {
        const file = await client.readFile(args.id, exact.path);
        if (args.json) return printJson({ path: file.path, size: file.content.length, content: Buffer.from(file.content).toString("base64"), encoding: "base64" });
        process.stdout.write(file.content);
        return;
      }
      const shown = wanted ? listing.files.filter((f) => f.path.startsWith(wanted + "/")) : listing.files;
      if (wanted && shown.length === 0) {
        throw new CliError(`The workspace of session ${args.id} has no file or folder "${wanted}".`);
      }
      if (args.json) return printJson({ files: shown, source: listing.source });
      if (shown.length === 0) {
        note("The workspace is empty.");
        return;
      }
      printTable(
        ["PATH", "SIZE", "MODIFIED"],
        shown.map((f) => [f.path, String(f.size ?? ""), timeAgo(f.modifiedAt)]),
      );
      if (listing.source === "snapshot") note(style.dim("From the stored snapshot (the session is not running).", process.stderr));
    }),
});

const workspace = defineCommand({
  meta: { name: "workspace", description: "Download the workspace as a .tar.gz file" },
  args: {
    ...idArg,
    output: { type: "string", alias: "o", description: "File to write (default: <id>.tar.gz; - for stdout)", valueHint: "file" },
    ...serverArgs,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const body = await forSession(client, args.id, () => client.downloadWorkspace(args.id));
      const target = args.output || `${args.id}.tar.gz`;
      const source = Readable.fromWeb(body as any);
      if (target === "-") {
        await pipeline(source, process.stdout, { end: false });
        return;
      }
      await pipeline(source, createWriteStream(target));
      line(`Wrote ${target}.`);
    }),
});

const exec = defineCommand({
  meta: { name: "exec", description: "Run a shell command in the session's sandbox; its exit code becomes ours" },
  args: {
    ...idArg,
    command: { type: "positional", description: "The command, as one quoted string", required: true },
    timeout: { type: "string", description: "Give up after this many seconds", valueHint: "seconds" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const seconds = parsePositiveInt(args.timeout, "--timeout");
      const result = await forSession(client, args.id, () =>
        client.exec(args.id, args.command, seconds !== undefined ? { timeout: seconds * 1000 } : {}),
      );
      if (args.json) {
        printJson(result);
      } else {
        process.stdout.write(result.stdout ?? "");
        process.stderr.write(result.stderr ?? "");
        if (result.timedOut) process.stderr.write(style.red("The command ran out of time and was stopped.\n", process.stderr));
      }
      // The shell's convention for a command killed by a timeout.
      if (result.timedOut) return 124;
      return typeof result.exitCode === "number" ? result.exitCode : 1;
    }),
});

const logs = defineCommand({
  meta: { name: "logs", description: "Show the sandbox's recent stdout/stderr lines" },
  args: { ...idArg, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const lines = await forSession(client, args.id, () => client.logs(args.id));
      if (args.json) return printJson(lines);
      if (lines.length === 0) note("No sandbox output yet.");
      for (const entry of lines) line(entry.stream === "stderr" ? style.red(entry.text) : entry.text);
    }),
});

export default defineCommand({
  meta: { name: "session", description: "Create, talk to, inspect and manage sessions" },
  subCommands: {
    create,
    send,
    list,
    info,
    history,
    files,
    workspace,
    exec,
    logs,
    interrupt,
    fork,
    checkpoints,
    rewind,
    pause: lifecycle("pause", "Save the workspace and free the sandbox", (c, id) => c.pauseSession(id)),
    resume: lifecycle("resume", "Make a paused or stopped session active again", (c, id) => c.resumeSession(id)),
    stop: lifecycle("stop", "End the sandbox process now (the session can be resumed)", (c, id) => c.stopSession(id)),
    end: lifecycle("end", "End the session for good (history is kept)", (c, id) => c.endSession(id)),
  },
});
