import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { setprivArgs } from "./isolation";
import type { SandboxUser } from "./user";

/** Who measures: the sandbox's own user (through setpriv), or the server's user when it is not root. */
export interface MeasureAs {
  user: SandboxUser | null;
  setpriv?: string;
}

const DU_SCRIPT = 'du -sxb -- "$@"; echo --; du -sx -B1 -- "$@"';

/**
 * The capability that lets the walk read folders the sandbox made unreadable
 * to itself (mode 000), so nothing hides from it: CAP_DAC_READ_SEARCH, or
 * CAP_DAC_OVERRIDE where the server's bounding set lacks it (Docker's default
 * set has only the latter); none when the server has neither (not root).
 */
function readEverythingCap(): string | undefined {
  let bounding = 0n;
  try {
    const hex = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1];
    bounding = hex ? BigInt(`0x${hex}`) : 0n;
  } catch {
    return undefined;
  }
  if (bounding & (1n << 2n)) return "dac_read_search";
  if (bounding & (1n << 1n)) return "dac_override";
  return undefined;
}
let walkCap: string | undefined | null = null;

/**
 * Bytes used under the folders `names` of `root`: the larger of the apparent
 * size (a sparse file counts at its full length, which is what a save would
 * copy) and the allocated blocks. Measured by `du` running as the sandbox
 * user, so root never walks a tree the sandbox can rearrange under it, with
 * one read-only capability so a folder the sandbox made unreadable still
 * counts. It starts in `root` (a folder of root's, resolved by root) and walks
 * the names from there: the data folder above is root's alone (0700), which
 * the sandbox user could not pass through.
 */
export function measureDiskUsage(root: string, names: string[], as: MeasureAs): Promise<number> {
  if (as.user && !as.setpriv) return Promise.reject(new Error("setpriv is needed to measure a sandbox's disk use"));
  if (walkCap === null) walkCap = as.user ? readEverythingCap() : undefined;
  const prefix = as.user ? setprivArgs(as.setpriv!, as.user, walkCap) : [];
  const argv = [...prefix, "/bin/sh", "-c", DU_SCRIPT, "du", ...names.map((name) => `./${name}`)];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "ignore"], env: { PATH: "/usr/bin:/bin", LC_ALL: "C" }, cwd: root });
    let out = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (text: string) => {
      if (out.length < 64 * 1024) out += text;
    });
    child.once("error", reject);
    child.once("close", () => {
      const [apparent = "", allocated = ""] = out.split("\n--\n");
      const totals = (text: string) => text.split("\n").filter((line) => /^\d+\t/.test(line));
      // One total per folder in each half, or the walk failed (a measurement of 0 would let anything through).
      if (totals(apparent).length !== names.length || totals(allocated).length !== names.length) {
        return reject(new Error(`du measured ${totals(apparent).length} of ${names.length} folders of ${root}`));
      }
      const sum = (lines: string[]) => lines.reduce((total, line) => total + (Number.parseInt(line, 10) || 0), 0);
      resolve(Math.max(sum(totals(apparent)), sum(totals(allocated))));
    });
  });
}

/**
 * How the watcher tells that a sandbox's processes did next to nothing: the
 * CPU they used (cumulative ns, or null when unknown). Writing costs CPU (0.35
 * to 1.6 ms per MiB on the 2-core VM of docs/benchmarks.md), while an idle
 * agent process uses about 9 ms a second, so a sandbox that used less than
 * `budgetNsPerSecond` since the last walk is not walked again until
 * `maxQuietMs` have passed. What costs no CPU to speak of (fallocate, a sparse
 * truncate) is not bounded by a walk a second either.
 */
export interface QuietCue {
  cpuUsageNs: () => number | null;
  budgetNsPerSecond?: number;
  maxQuietMs?: number;
}

export const QUIET_CPU_BUDGET_NS_PER_SECOND = 20_000_000;
export const MAX_QUIET_MS = 5000;

/**
 * Measures a sandbox's writable dirs at a bounded interval and calls
 * `onExceeded` when they pass the limit. The interval stretches to ten
 * times the last measurement's duration (up to `maxIntervalMs`). With a
 * `quiet` cue, a tick after which the sandbox used almost no CPU skips the
 * walk (see QuietCue).
 *
 * After it fired, it fires again only when use grows past the level it
 * fired at (plus a little slack): a workspace left over the limit does not
 * kill every new process, so the agent can still run to delete files.
 * Going back under the limit restores the plain rule.
 */
export class DiskWatcher {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Measuring at intervals (between start() and pause()); each start counts up, so a timer of an earlier one lapses. */
  private active = false;
  private generation = 0;
  private fired = false;
  /** Use at the last firing, while it stays over the limit. */
  private firedAt: number | undefined;
  lastBytes = 0;
  /** Walks done (every check), and ticks that skipped theirs because the sandbox was quiet. */
  walks = 0;
  quietSkips = 0;
  /** When the last walk began, and the sandbox's CPU use then. */
  private lastWalk: { at: number; usageNs: number | null } | undefined;

  constructor(
    private readonly measure: () => Promise<number>,
    private readonly limitBytes: number,
    private readonly onExceeded: (bytes: number) => void,
    private readonly intervalMs = 1000,
    private readonly maxIntervalMs = 10_000,
    private readonly quiet?: QuietCue,
  ) {}

  /** Measures at intervals from now on (again after a pause). */
  start(): void {
    if (this.stopped || this.active) return;
    this.active = true;
    this.generation++;
    this.schedule(this.intervalMs, this.generation);
  }

  /** Nothing that could write is running: one last measurement now, then none until start(). */
  pause(): void {
    if (this.stopped || !this.active) return;
    this.active = false;
    if (this.timer) clearTimeout(this.timer);
    void this.check().catch(() => {});
  }

  stop(): void {
    this.stopped = true;
    this.active = false;
    if (this.timer) clearTimeout(this.timer);
  }

  /** The use above which the watcher fires now. */
  get threshold(): number {
    if (this.firedAt === undefined) return this.limitBytes;
    return Math.max(this.limitBytes, this.firedAt) + Math.max(16 * 1024 * 1024, this.limitBytes / 64);
  }

  /** Measures now; fires `onExceeded` if over the limit. */
  async check(): Promise<number> {
    // Read before the walk: what the sandbox does while it runs counts towards the next one.
    this.lastWalk = { at: performance.now(), usageNs: this.quiet?.cpuUsageNs() ?? null };
    this.walks++;
    const bytes = await this.measure();
    this.lastBytes = bytes;
    if (bytes <= this.limitBytes) this.firedAt = undefined;
    if (bytes > this.threshold && !this.fired && !this.stopped) {
      this.fired = true;
      this.firedAt = bytes;
      this.onExceeded(bytes);
    }
    return bytes;
  }

  /** Re-arms after the caller dealt with an overrun (e.g. killed everything). */
  rearm(): void {
    this.fired = false;
  }

  private schedule(delay: number, generation: number): void {
    if (this.stopped || !this.active || generation !== this.generation) return;
    this.timer = setTimeout(async () => {
      if (this.isQuiet()) {
        this.quietSkips++;
        this.schedule(this.intervalMs, generation);
        return;
      }
      const started = performance.now();
      try {
        await this.check();
      } catch {
        // a failed measurement is retried at the next tick
      }
      const took = performance.now() - started;
      this.schedule(Math.min(this.maxIntervalMs, Math.max(this.intervalMs, took * 10)), generation);
    }, delay);
    this.timer.unref();
  }

  /** The sandbox used less CPU than its budget since a walk that is not yet `maxQuietMs` old. */
  private isQuiet(): boolean {
    if (!this.quiet || !this.lastWalk || this.lastWalk.usageNs === null) return false;
    const elapsedMs = performance.now() - this.lastWalk.at;
    if (elapsedMs >= (this.quiet.maxQuietMs ?? MAX_QUIET_MS)) return false;
    const usageNs = this.quiet.cpuUsageNs();
    if (usageNs === null) return false;
    const budgetNs = ((this.quiet.budgetNsPerSecond ?? QUIET_CPU_BUDGET_NS_PER_SECOND) * elapsedMs) / 1000;
    return usageNs - this.lastWalk.usageNs <= budgetNs;
  }
}
