import { createInterface, type Interface } from "node:readline";
import { defineCommand } from "citty";
import type { AshClient } from "../../client/client";
import type { StreamEventData } from "../../client/events";
import { describeError, isNotFound, serverArgs, unknownAgent, usageError, withServer } from "../errors";
import { exitWith, note, style, terminalWidth, toolLine, truncate, TurnPrinter, type TurnOutcome } from "../output";

/** A held tool use, as the chat shows it. */
export type HeldTool = StreamEventData["tool_confirmation"];
/** How a chat answers a held tool use; `undefined`: the turn is being interrupted, so nothing is sent. */
export type AskTool = (held: HeldTool, signal: AbortSignal) => Promise<{ allow: boolean; message?: string } | undefined>;

/** The question for a held tool use: the tool, its whole input, and y/N. */
export function toolQuestion(held: HeldTool): string {
  const width = terminalWidth(process.stderr, 100);
  const input = truncate(JSON.stringify(held.input), Math.max(width * 4, 200));
  return `${style.bold(`Allow ${toolLine(held.name, held.input, width - 6).replace(/^⏺ /, "")}?`, process.stderr)}
${style.dim(`  input: ${input}`, process.stderr)}
[y/N] `;
}

/** Without a terminal nobody can be asked: the tool is denied, and the chat says so. */
export const denyWithoutTerminal: AskTool = async (held) => {
  note(style.red(`Denied ${held.name}: this chat does not read from a terminal, so nobody can confirm it.`, process.stderr));
  return { allow: false, message: "The user could not be asked (no terminal), so this tool use was denied." };
};

/** Asks on the terminal with `rl` (yes: y or yes; anything else: no). */
export function askWith(rl: Interface): AskTool {
  return (held, signal) =>
    new Promise((resolve) => {
      if (signal.aborted) return resolve(undefined);
      signal.addEventListener("abort", () => resolve(undefined), { once: true });
      rl.question(toolQuestion(held), { signal }, (answer) => {
        const allow = /^\s*y(es)?\s*$/i.test(answer);
        resolve(allow ? { allow } : { allow, message: "The user denied this tool use." });
      });
    });
}

/**
 * Runs turns on one session and owns Ctrl-C while a turn runs: the first Ctrl-C asks the
 * server to interrupt the turn (which then ends on its own, with an `interrupted` error),
 * a second one quits. Without this, Ctrl-C would only drop the connection, and the turn
 * would carry on, unseen, on the server.
 */
export class TurnControl {
  private running = false;
  private interrupting = false;
  private printer?: TurnPrinter;
  /** Ends a question about a held tool use when the turn is interrupted. */
  private asking?: AbortController;
  /** How a held tool use is answered (a terminal's y/N, or a denial without one). */
  ask: AskTool = denyWithoutTerminal;

  constructor(
    private readonly client: AshClient,
    readonly sessionId: string,
    private readonly options: { json?: boolean; model?: string; maxTurns?: number } = {},
  ) {}

  get busy(): boolean {
    return this.running;
  }

  /** Handles one Ctrl-C; answers `quit` when the caller should exit instead. */
  interrupt(): "interrupting" | "quit" {
    if (!this.running || this.interrupting) return "quit";
    this.interrupting = true;
    this.asking?.abort();
    const message = style.dim("Interrupting the turn… (Ctrl-C again to quit)", process.stderr);
    if (this.printer) this.printer.notice(message);
    else note(message);
    this.client.interrupt(this.sessionId).catch((error: Error) => {
      // The turn may have finished in the meantime; that is not worth a second message.
      if (this.running) note(style.red(`Could not interrupt the turn: ${error.message}`, process.stderr));
    });
    return "interrupting";
  }

  /** Sends one message and prints its turn as it streams. */
  async send(content: string): Promise<TurnOutcome> {
    const printer = new TurnPrinter(this.options.json);
    this.printer = printer;
    this.running = true;
    this.interrupting = false;
    try {
      // Text arrives as deltas by default; raw partial messages (includePartialMessages: true) would only double the stream.
      const events = this.client.sendMessage(this.sessionId, content, {
        model: this.options.model,
        maxTurns: this.options.maxTurns,
      });
      for await (const event of events) {
        printer.event(event);
        if (event.type === "tool_confirmation" && !this.interrupting) await this.answer(event.data);
      }
    } finally {
      this.running = false;
      this.printer = undefined;
    }
    return printer.result();
  }

  /** Asks about one held tool use and sends the answer; the turn's stream goes on after it. */
  private async answer(held: HeldTool): Promise<void> {
    const asking = (this.asking = new AbortController());
    try {
      const answer = await this.ask(held, asking.signal);
      if (!answer || this.interrupting) return;
      await this.client.decideTool(this.sessionId, { toolUseId: held.toolUseId, decision: answer.allow ? "allow" : "deny", ...(answer.message ? { message: answer.message } : {}) });
    } catch (error) {
      // Decided elsewhere, or the turn ended meanwhile: the stream tells what happened.
      note(style.red(`Could not answer for ${held.name}: ${error instanceof Error ? error.message : String(error)}`, process.stderr));
    } finally {
      this.asking = undefined;
    }
  }
}

/** Exit code for a finished turn: 0, 130 when it was interrupted, 1 when it failed. */
export function turnExitCode(outcome: TurnOutcome): number {
  if (!outcome.error) return 0;
  return outcome.error.code === "interrupted" ? 130 : 1;
}

/** While `control` lives, Ctrl-C (SIGINT) interrupts the running turn or quits. */
export function interruptOnSigint(control: TurnControl, onQuit: () => void = () => void exitWith(130)): () => void {
  const handler = () => {
    if (control.interrupt() === "quit") onQuit();
  };
  process.on("SIGINT", handler);
  return () => process.off("SIGINT", handler);
}

/** --confirm-tools: "all", or tool names separated by commas. */
export function parseConfirmTools(value: string | undefined): "all" | string[] | undefined {
  if (value === undefined) return undefined;
  if (value.trim() === "all") return "all";
  const names = value.split(",").map((n) => n.trim()).filter(Boolean);
  if (names.length === 0) throw usageError('--confirm-tools takes "all" or tool names separated by commas, e.g. --confirm-tools Bash,Write.');
  return names;
}

/** A citty string flag as a positive whole number, or a sentence saying what is wrong. */
export function parsePositiveInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined || value === "") return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 1) throw usageError(`${flag} takes a whole number of 1 or more, not "${value}".`);
  return Number(value);
}

export default defineCommand({
  meta: {
    name: "chat",
    description: "Talk to an agent in a new session: interactively, one message, or one message per line from a pipe",
  },
  args: {
    agent: { type: "positional", description: "Name of a deployed agent", required: true },
    message: { type: "positional", description: "Send this one message and exit", required: false },
    model: { type: "string", description: "Model for this session", valueHint: "model" },
    "max-turns": { type: "string", description: "Most model turns per message", valueHint: "n" },
    json: { type: "boolean", description: "Print the raw events as JSON lines" },
    "confirm-tools": { type: "string", description: 'Ask y/n before these tools run: "all" or names, comma-separated (default: the agent\'s policy)', valueHint: "all|Bash,Write" },
    ...serverArgs,
  },
  run: ({ args }) =>
    withServer(args, async ({ client, url, hasKey }) => {
      const maxTurns = parsePositiveInt(args["max-turns"], "--max-turns");
      const confirmTools = parseConfirmTools(args["confirm-tools"]);
      const session = await client.createSession({ agent: args.agent, ...(args.model ? { model: args.model } : {}), ...(confirmTools ? { confirmTools } : {}) }).catch(async (error) => {
        throw isNotFound(error) ? await unknownAgent(client, args.agent) : error;
      });
      const control = new TurnControl(client, session.id, { json: args.json, maxTurns });
      if (!args.json) note(style.dim(`Session ${session.id} with ${session.agentName ?? args.agent}`, process.stderr));
      try {
        if (args.message !== undefined && args.message !== "") return await chatOnce(control, args.message);
        if (!process.stdin.isTTY) return await chatFromPipe(control);
        return await chatInteractive(control, (error) => describeError(error, { url, hasKey }));
      } finally {
        await release(client, session.id, Boolean(args.json));
      }
    }),
});

/**
 * A chat's session is paused when the chat ends: its sandbox is freed at once instead of
 * idling until the server evicts it, and the conversation can still go on later (a message
 * to a paused session resumes it).
 */
async function release(client: AshClient, id: string, quiet: boolean): Promise<void> {
  try {
    await client.pauseSession(id);
    if (!quiet) note(style.dim(`Paused session ${id}; continue it with \`ash session send ${id} "…"\`.`, process.stderr));
  } catch {
    // The server may be gone or the session already ended; the chat's result stands.
  }
}

async function chatOnce(control: TurnControl, message: string): Promise<number> {
  const stop = interruptOnSigint(control);
  // With a terminal, a held tool use is asked about there (readline then owns Ctrl-C).
  const rl = process.stdin.isTTY ? createInterface({ input: process.stdin, output: process.stderr, terminal: true }) : undefined;
  if (rl) {
    control.ask = askWith(rl);
    rl.on("SIGINT", () => {
      if (control.interrupt() === "quit") void exitWith(130);
    });
  }
  try {
    return turnExitCode(await control.send(message));
  } finally {
    stop();
    rl?.close();
  }
}

/** Non-interactive: each line of stdin is one message, sent in order; EOF ends the chat. */
async function chatFromPipe(control: TurnControl): Promise<number> {
  const stop = interruptOnSigint(control);
  const lines = createInterface({ input: process.stdin, terminal: false, crlfDelay: Number.POSITIVE_INFINITY });
  let code = 0;
  try {
    for await (const raw of lines) {
      const text = raw.trim();
      if (!text) continue;
      const outcome = await control.send(text);
      // An interrupted turn is the user's choice, not a failure of the chat.
      if (turnExitCode(outcome) === 1) code = 1;
    }
  } finally {
    stop();
    lines.close();
  }
  return code;
}

/** Interactive: a prompt on the terminal; Ctrl-C interrupts a running turn, quits at the prompt; Ctrl-D quits. */
function chatInteractive(control: TurnControl, describe: (error: unknown) => string): Promise<number> {
  return new Promise((resolve) => {
    const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: true, historySize: 200 });
    rl.setPrompt(style.bold("› "));
    control.ask = askWith(rl);
    let closing = false;
    let lastCode = 0;

    note(style.dim("Type a message and press Enter. Ctrl-C interrupts a running turn; Ctrl-C at the prompt or Ctrl-D quits.", process.stderr));
    rl.prompt();

    rl.on("line", (raw) => {
      const text = raw.trim();
      if (control.busy) {
        note(style.dim("A turn is still running; press Ctrl-C to interrupt it.", process.stderr));
        return;
      }
      if (text === "/exit" || text === "/quit") return rl.close();
      if (!text) return rl.prompt();
      control
        .send(text)
        .then((outcome) => {
          lastCode = turnExitCode(outcome) === 1 ? 1 : 0;
        })
        .catch((error: unknown) => {
          // A failed turn (server gone, stream lost) is reported, and the prompt comes back.
          note(style.red(describe(error), process.stderr));
          lastCode = 1;
        })
        .finally(() => {
          if (closing) resolve(lastCode);
          else rl.prompt();
        });
    });

    // In a terminal readline owns Ctrl-C (raw mode), so it arrives here rather than as a signal.
    rl.on("SIGINT", () => {
      if (control.interrupt() === "quit") {
        process.stdout.write("\n");
        if (control.busy) return void exitWith(130);
        closing = true;
        rl.close();
      }
    });

    rl.on("close", () => {
      closing = true;
      if (!control.busy) resolve(lastCode);
    });
  });
}
