import { EventEmitter } from "node:events";
import { pipeline, Transform, type Readable, type Writable } from "node:stream";
import type { SpawnedProcess } from "@anthropic-ai/claude-agent-sdk";
import type { Launch } from "./launch";
import type { LimitReason } from "./limits";

type ExitListener = (code: number | null, signal: NodeJS.Signals | null) => void;

/**
 * The longest line the server reads from a CLI's stdout. The SDK reads it a
 * line at a time into the server's own memory, outside the sandbox's limit,
 * and what the CLI writes is the sandbox's to choose (a tool can take over
 * its stdout): a line past this ends the process. A real message (a tool
 * result, a transcript entry) is a few MiB at most.
 */
export const MAX_STDOUT_LINE_BYTES = 64 * 1024 * 1024;

/** Passes bytes on until a line grows past `max`, then calls `overrun` once and passes nothing more. */
export function lineLimit(max: number, overrun: () => void): Transform {
  let sinceNewline = 0;
  let over = false;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      if (over) return done();
      const first = chunk.indexOf(10);
      // The line this chunk goes on with (to its first newline), and the one it leaves open (after its last).
      const continued = sinceNewline + (first < 0 ? chunk.length : first);
      const open = first < 0 ? continued : chunk.length - chunk.lastIndexOf(10) - 1;
      if (continued > max || open > max) {
        over = true;
        overrun();
        return done();
      }
      sinceNewline = open;
      done(null, chunk);
    },
  });
}

/**
 * The Agent SDK's view of a sandboxed CLI. Differences from a bare
 * ChildProcess: kill(SIGTERM/SIGINT) reaches the CLI itself rather than the
 * bwrap supervisor; kill(SIGKILL) ends the whole sandboxed tree; and 'exit'
 * is emitted only after the limit check, so an exit listener can already
 * read why the process ended.
 */
export class SandboxedProcess extends EventEmitter implements SpawnedProcess {
  private _killed = false;
  private _exitCode: number | null = null;
  private _signalCode: NodeJS.Signals | null = null;
  private _exited = false;
  private _reason: LimitReason | null = null;

  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly pid: number | undefined;

  constructor(
    private readonly launched: Launch,
    decideReason: (exit: { code: number | null; signal: NodeJS.Signals | null }) => Promise<LimitReason | null>,
    onOverrun?: () => void,
  ) {
    super();
    this.stdin = launched.stdin!;
    this.stdout = pipeline(
      launched.stdout,
      lineLimit(MAX_STDOUT_LINE_BYTES, () => {
        onOverrun?.();
        this.kill("SIGKILL");
      }),
      () => undefined,
    );
    this.stderr = launched.stderr;
    this.pid = launched.child.pid;
    launched.child.on("error", (error) => this.emit("error", error));
    void launched.exited.then(async (exit) => {
      this._reason = await decideReason(exit).catch(() => null);
      this._exitCode = exit.code;
      this._signalCode = exit.signal;
      this._exited = true;
      this.emit("exit", exit.code, exit.signal);
    });
  }

  get killed(): boolean {
    return this._killed;
  }

  get exitCode(): number | null {
    return this._exitCode;
  }

  get signalCode(): NodeJS.Signals | null {
    return this._signalCode;
  }

  /** Set when the process ended because it hit a sandbox limit. */
  get limitKillReason(): LimitReason | null {
    return this._reason;
  }

  kill(signal: NodeJS.Signals = "SIGTERM"): boolean {
    if (this._exited) return false;
    let sent: boolean;
    if (signal === "SIGKILL") {
      this.launched.killTree();
      sent = true;
    } else {
      sent = this.launched.signal(signal);
    }
    if (sent) this._killed = true;
    return sent;
  }

  override on(event: "exit", listener: ExitListener): this;
  override on(event: "error", listener: (error: Error) => void): this;
  override on(event: string | symbol, listener: (...args: any[]) => void): this {
    return super.on(event, listener);
  }

  override once(event: "exit", listener: ExitListener): this;
  override once(event: "error", listener: (error: Error) => void): this;
  override once(event: string | symbol, listener: (...args: any[]) => void): this {
    return super.once(event, listener);
  }

  override off(event: "exit", listener: ExitListener): this;
  override off(event: "error", listener: (error: Error) => void): this;
  override off(event: string | symbol, listener: (...args: any[]) => void): this {
    return super.off(event, listener);
  }
}
