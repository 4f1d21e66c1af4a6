import { EventEmitter } from "node:events";
import type { Readable, Writable } from "node:stream";
import type { SpawnedProcess } from "@anthropic-ai/claude-agent-sdk";
import type { Launch } from "./launch";
import type { LimitReason } from "./limits";

type ExitListener = (code: number | null, signal: NodeJS.Signals | null) => void;

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
  ) {
    super();
    this.stdin = launched.stdin!;
    this.stdout = launched.stdout;
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
