import type { StreamEvent, TokenUsage } from "../client/events";

/**
 * Printing for the CLI: data goes to stdout (plain lines, tables, or JSON with `--json`),
 * progress and decoration go to stderr, so `ash … > file` captures only the data.
 */

type Stream = NodeJS.WriteStream;

function colorOn(stream: Stream): boolean {
  if (process.env.NO_COLOR || process.env.TERM === "dumb") return false;
  if (process.env.FORCE_COLOR && process.env.FORCE_COLOR !== "0") return true;
  return Boolean(stream.isTTY);
}

function paint(stream: Stream, open: number, close: number, text: string): string {
  return colorOn(stream) ? `\u001B[${open}m${text}\u001B[${close}m` : text;
}

export const style = {
  dim: (text: string, stream: Stream = process.stdout) => paint(stream, 2, 22, text),
  bold: (text: string, stream: Stream = process.stdout) => paint(stream, 1, 22, text),
  red: (text: string, stream: Stream = process.stdout) => paint(stream, 31, 39, text),
  green: (text: string, stream: Stream = process.stdout) => paint(stream, 32, 39, text),
  cyan: (text: string, stream: Stream = process.stdout) => paint(stream, 36, 39, text),
};

/** Width to fit lines into: the terminal's, or `fallback` when the output is not a terminal. */
export function terminalWidth(stream: Stream = process.stdout, fallback = Number.POSITIVE_INFINITY): number {
  return stream.isTTY && stream.columns ? stream.columns : fallback;
}

/** Cuts `text` to `width` characters, marking the cut with "…". */
export function truncate(text: string, width: number): string {
  if (!Number.isFinite(width)) return text;
  const chars = Array.from(text);
  if (chars.length <= width) return text;
  if (width <= 1) return chars.slice(0, Math.max(0, width)).join("");
  return chars.slice(0, width - 1).join("") + "…";
}

/** Writes one line of data to stdout. */
export function line(text = ""): void {
  process.stdout.write(text + "\n");
}

/** Writes one line of progress or notice to stderr. */
export function note(text: string): void {
  process.stderr.write(text + "\n");
}

/** Prints a value as indented JSON on stdout (`--json`). */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

/**
 * Prints rows under a header as aligned columns. On a terminal the widest column is cut so a
 * row fits the screen; into a pipe nothing is cut.
 */
export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => Array.from(r[i] ?? "").length)));
  const gap = 2;
  const available = terminalWidth();
  let total = widths.reduce((a, b) => a + b, 0) + gap * (widths.length - 1);
  while (total > available) {
    const widest = widths.indexOf(Math.max(...widths));
    if (widths[widest] <= 8) break;
    widths[widest]--;
    total--;
  }
  const render = (cells: string[]) =>
    cells
      .map((cell, i) => {
        const cut = truncate(cell ?? "", widths[i]);
        return i === cells.length - 1 ? cut : cut.padEnd(widths[i] + (cut.length - Array.from(cut).length));
      })
      .join(" ".repeat(gap))
      .trimEnd();
  line(style.dim(render(headers)));
  for (const row of rows) line(render(row));
}

/** Prints `label: value` pairs with the labels aligned. */
export function printFields(fields: [string, string | number | null | undefined][]): void {
  const shown = fields.filter(([, v]) => v !== undefined && v !== null && v !== "");
  const width = Math.max(...shown.map(([k]) => k.length));
  for (const [key, value] of shown) line(`${style.dim((key + ":").padEnd(width + 1))} ${value}`);
}

/** "3 min ago", "2 h ago", or the date, for timestamps in tables. */
export function timeAgo(iso: string | undefined | null, now = Date.now()): string {
  if (!iso) return "";
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return iso;
  const seconds = Math.round((now - then) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  if (seconds < 86400 * 30) return `${Math.floor(seconds / 86400)} d ago`;
  return new Date(then).toISOString().slice(0, 10);
}

/** 1234567 → "1,234,567". */
export function formatCount(n: number): string {
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Seconds → "3 d 4 h", "12 min", "40 s". */
export function formatDuration(totalSeconds: number): string {
  const s = Math.max(0, Math.floor(totalSeconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** The input field that best says what a tool call does, by tool. */
const TOOL_SUBJECT: Record<string, string[]> = {
  Bash: ["command"],
  Read: ["file_path"],
  Write: ["file_path"],
  Edit: ["file_path"],
  MultiEdit: ["file_path"],
  NotebookEdit: ["notebook_path"],
  Glob: ["pattern"],
  Grep: ["pattern"],
  WebFetch: ["url"],
  WebSearch: ["query"],
  Task: ["description"],
  Agent: ["description"],
  TodoWrite: [],
};

/** One short line for a tool call, e.g. `⏺ Bash(ls -la)`, cut to `width`. */
export function toolLine(name: string, input: unknown, width: number): string {
  const record = input && typeof input === "object" ? (input as Record<string, unknown>) : {};
  const keys = TOOL_SUBJECT[name] ?? Object.keys(record).filter((k) => typeof record[k] === "string").slice(0, 1);
  let subject = keys.map((k) => record[k]).find((v) => typeof v === "string") as string | undefined;
  if (subject === undefined && !(name in TOOL_SUBJECT) && Object.keys(record).length > 0) subject = JSON.stringify(record);
  subject = (subject ?? "").replace(/\s+/g, " ").trim();
  const head = `⏺ ${name}(`;
  if (!subject) return truncate(`⏺ ${name}`, width);
  return head + truncate(subject, Math.max(8, width - head.length - 1)) + ")";
}

/** The first line of a tool result, for `⎿` lines under failed calls. */
export function resultText(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((block) => (block && typeof block === "object" && typeof (block as any).text === "string" ? (block as any).text : ""))
      .filter(Boolean)
      .join("\n");
  }
  return content === undefined || content === null ? "" : JSON.stringify(content);
}

/** "2 turns · 1,234 tokens in · 56 out" from a `turn_complete` event. */
export function turnSummary(numTurns: number | undefined, usage: TokenUsage | undefined): string {
  const parts: string[] = [];
  if (typeof numTurns === "number") parts.push(`${numTurns} turn${numTurns === 1 ? "" : "s"}`);
  if (usage) {
    const input = (usage.input_tokens ?? 0) + (usage.cache_read_input_tokens ?? 0) + (usage.cache_creation_input_tokens ?? 0);
    parts.push(`${formatCount(input)} tokens in`, `${formatCount(usage.output_tokens ?? 0)} out`);
  }
  return parts.join(" · ");
}

export interface TurnOutcome {
  /** The turn's `error` event, when it had one (`code` is e.g. `interrupted`, `model_error`). */
  error?: { error: string; code?: string };
  /** Whether `turn_complete` arrived. */
  completed: boolean;
  /** The session's last event id seen, for resuming. */
  lastEventId?: number;
}

/**
 * Prints the events of one turn as they arrive: assistant text to stdout as written, each
 * tool call as one line on stderr, failed tool results under it, and a closing summary line.
 * With `json`, each event is one JSON line on stdout instead.
 */
export class TurnPrinter {
  private sawDelta = false;
  private atLineStart = true;
  private readonly outcome: TurnOutcome = { completed: false };

  constructor(private readonly json = false) {}

  event(event: StreamEvent): void {
    this.outcome.lastEventId = event.id;
    if (event.type === "error") this.outcome.error = event.data;
    if (event.type === "turn_complete") this.outcome.completed = true;
    if (this.json) {
      process.stdout.write(JSON.stringify({ id: event.id, type: event.type, data: event.data }) + "\n");
      return;
    }
    switch (event.type) {
      case "text_delta":
        this.sawDelta = true;
        this.text(event.data.delta);
        break;
      case "message":
        // Without partial messages, the text arrives whole in the assistant message.
        if (!this.sawDelta && event.data.type === "assistant") this.text(assistantText(event.data));
        break;
      case "tool_use":
        this.decoration(style.cyan(toolLine(event.data.name, event.data.input, terminalWidth(process.stderr, 100)), process.stderr));
        break;
      case "tool_result":
        if (event.data.is_error) {
          const first = resultText(event.data.content).split("\n").find((l) => l.trim()) ?? "failed";
          this.decoration(style.red(truncate(`  ⎿ ${first.trim()}`, terminalWidth(process.stderr, 100)), process.stderr));
        }
        break;
      case "turn_complete":
        this.endText();
        this.decoration(style.dim(turnSummary(event.data.numTurns, event.data.usage), process.stderr));
        break;
      case "error":
        this.decoration(
          event.data.code === "interrupted"
            ? style.dim("Interrupted.", process.stderr)
            : style.red(sentence(event.data.error || "The turn failed."), process.stderr),
        );
        break;
      case "tool_confirmation":
        // The question comes next, on a line of its own.
        this.endText();
        break;
      case "tool_decision":
        if (event.data.decision === "deny") this.decoration(style.red(truncate(`  ⎿ denied: ${event.data.message ?? ""}`, terminalWidth(process.stderr, 100)), process.stderr));
        break;
      case "done":
        this.endText();
        break;
      default:
        break;
    }
  }

  /** A line on stderr between streamed text, e.g. "Interrupting…", that never splits a line of text. */
  notice(text: string): void {
    this.decoration(text);
  }

  result(): TurnOutcome {
    this.endText();
    return this.outcome;
  }

  private text(text: string): void {
    if (!text) return;
    process.stdout.write(text);
    this.atLineStart = text.endsWith("\n");
  }

  /** Text ends with a newline before anything else is printed, so lines never run together. */
  private endText(): void {
    if (!this.atLineStart) {
      process.stdout.write("\n");
      this.atLineStart = true;
    }
  }

  private decoration(text: string): void {
    this.endText();
    process.stderr.write(text + "\n");
  }
}

/** The text blocks of an assistant SDK message, joined. */
export function assistantText(message: { [key: string]: unknown }): string {
  const content = (message.message as { content?: unknown } | undefined)?.content;
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .filter((b) => b && typeof b === "object" && (b as any).type === "text" && typeof (b as any).text === "string")
    .map((b) => (b as any).text as string)
    .join("");
}

/** Makes sure a message reads as a sentence: capital is the server's business, the full stop is ours. */
export function sentence(text: string): string {
  const trimmed = text.trim();
  return /[.!?:)]$/.test(trimmed) ? trimmed : trimmed + ".";
}

/** Waits until everything written to stdout and stderr has been handed to the OS, then exits. */
export async function exitWith(code: number): Promise<never> {
  await Promise.all([
    new Promise<void>((resolve) => process.stdout.write("", () => resolve())),
    new Promise<void>((resolve) => process.stderr.write("", () => resolve())),
  ]);
  process.exit(code);
}

/** A byte count the way people read it: 512 B, 3.4 kB, 12.0 MB, 1.2 GB. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} kB`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  return `${(bytes / 1024 / 1024 / 1024).toFixed(1)} GB`;
}
