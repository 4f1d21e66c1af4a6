import { randomUUID } from "node:crypto";
import { chmod, chown, lchown, lstat, mkdir, readdir } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import type { SpawnOptions, SpawnedProcess } from "@anthropic-ai/claude-agent-sdk";
import { DiskWatcher, measureDiskUsage } from "./disk-usage";
import { IO_ENV, ioProcessOf, type WorkspaceIo } from "./workspace-io";
import { buildSandboxEnv, withoutModelSettings, type EnvMap } from "./env";
import {
  detectIsolation,
  executableDir,
  findSandboxTools,
  type IsolationKind,
  type IsolationReport,
  type SandboxTools,
} from "./isolation";
import { launch, type Launch, type LaunchContext } from "./launch";
import { openSandboxNetwork, type SandboxNetwork, type SandboxService } from "./egress-net";
import {
  DEFAULT_LIMITS,
  createResourceGroup,
  detectLimitMode,
  mib,
  NORMAL_CPU_SHARES,
  sharesForNice,
  validateLimits,
  type LimitCounters,
  type LimitHost,
  type LimitMode,
  type LimitReason,
  type SandboxLimits,
} from "./limits";
import { LogBuffer, type SandboxLogLine } from "./log-buffer";
import { removeTree } from "./remove-tree";
import type { Trash } from "./trash";
import { MAX_STDOUT_LINE_BYTES, SandboxedProcess } from "./sandbox-process";
import { resolveSandboxUser, type SandboxUser } from "./user";

export interface CreateSandboxOptions extends LimitHost {
  /** The server's data dir; the sandbox lives in `<dataDir>/sandboxes/<id>/`. */
  dataDir: string;
  /** Defaults to a random UUID. Letters, digits, `_`, `-`, `.` only. */
  id?: string;
  /** Missing fields take DEFAULT_LIMITS. */
  limits?: Partial<SandboxLimits>;
  /** The agent's and the session's declared variables, added to every process. */
  env?: EnvMap;
  /** More host directories to show read-only (absolute). */
  readOnlyPaths?: string[];
  /**
   * Run without isolation when bwrap is unusable (it is refused otherwise):
   * then the sandbox can read whatever its uid can on the host.
   */
  allowUnisolated?: boolean;
  /** Force an isolation kind instead of detecting it ("bwrap" fails when unusable; "none" needs allowUnisolated). */
  isolation?: IsolationKind;
  /** Force a limit mechanism instead of detecting one. */
  limitMode?: LimitMode;
  /** The unprivileged user; defaults to `ash-sandbox` if it exists, else 10001:10001. */
  user?: { uid?: number; gid?: number };
  /** How often the disk use is measured at least (ms); default 1000. */
  diskCheckIntervalMs?: number;
  /** Lines kept for logs(); default 1000. */
  logCapacity?: number;
  /**
   * Services bridged into the sandbox's own network namespace (which has
   * only loopback either way), and the variables every process gets to find
   * them; these win over `env`.
   */
  network?: { services: SandboxService[]; env?: (addresses: SandboxNetwork["addresses"]) => Record<string, string> };
  /**
   * Fills the new, empty folders before they are handed to the sandbox user
   * (agent files, transcripts). Runs before any process of the sandbox
   * exists, so nothing can race these writes.
   */
  populate?: (dirs: { workspaceDir: string; homeDir: string; configDir: string }) => Promise<void>;
  /** Where destroy() puts the sandbox's folder to be removed in the background; without it, destroy() removes it before it returns. */
  trash?: Trash;
}

export interface ExecOptions {
  /** Kill the command (and all it started) after this long; default 60 000. */
  timeoutMs?: number;
  /** Working directory: relative to the workspace, or absolute inside it. */
  cwd?: string;
  /** Extra variables for this command only. */
  env?: EnvMap;
  /** Cap per stream; output past it is dropped. Default 1 MiB. */
  maxOutputBytes?: number;
  /** Bytes written to the command's stdin (which is empty otherwise). */
  stdin?: string | Buffer;
}

export interface ExecResult {
  /** Exit status; 128+N when the command died of signal N inside the sandbox; null when killed from outside. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** True when stdout or stderr hit maxOutputBytes. */
  truncated: boolean;
  /** Set when a sandbox limit ended the command. */
  limitReason: LimitReason | null;
}

export interface Sandbox {
  readonly id: string;
  /** `<dataDir>/sandboxes/<id>` */
  readonly rootDir: string;
  /** The live working dir, read-write inside the sandbox at the same path. */
  readonly workspaceDir: string;
  /** Private HOME. */
  readonly homeDir: string;
  /** CLAUDE_CONFIG_DIR (transcripts go to `<configDir>/projects/`). */
  readonly configDir: string;
  /** The uid/gid processes run as; null when the server is not root and keeps its own. */
  readonly user: SandboxUser | null;
  readonly isolation: IsolationReport;
  readonly limitMode: LimitMode;
  readonly limits: SandboxLimits;
  /** Where each network service is reached from inside. */
  readonly networkAddresses: SandboxNetwork["addresses"];
  /** Which limits the kernel enforces here (the disk watcher runs in every mode). */
  readonly enforced: { memory: boolean; processes: boolean; cpu: boolean; fileSize: boolean };
  /** Drop-in for the Agent SDK's `spawnClaudeCodeProcess` option; `nice` starts it at a lower CPU priority. */
  readonly spawnClaudeCode: (options: SpawnOptions, how?: { nice?: number }) => SpawnedProcess;
  /** Sets the niceness of every process the sandbox runs now (a claimed warm spare: back to 0). */
  renice(nice: number): void;
  /** Runs `sh -c command` inside the sandbox, with its limits (its network bridges started again first if they were stopped). */
  exec(command: string, options?: ExecOptions): Promise<ExecResult>;
  /**
   * Stops the processes that bridge the sandbox's loopback ports to the server
   * while nothing in it runs (an idle session), so an idle sandbox costs no
   * process at all; `resumeNetwork` starts them again before the next agent
   * process (exec does it by itself).
   */
  suspendNetwork(): Promise<void>;
  resumeNetwork(): Promise<void>;
  /** Recent output lines: the CLI's stderr and every exec's stdout/stderr. */
  logs(limit?: number): SandboxLogLine[];
  /** Why the latest limit-ended process ended; null if no limit ever ended one. */
  limitKillReason(): LimitReason | null;
  /**
   * How often a limit has struck so far, whichever process it hit (the CLI or
   * a tool it ran): compare two readings to learn what happened in between.
   */
  limitCounters(): LimitCounters & { diskKills: number };
  /** Bytes in the workspace and home, measured now (as the sandbox user). */
  diskUsage(): Promise<number>;
  /** How often the disk watcher walked the sandbox, and how often it skipped a walk because the sandbox was quiet. */
  diskWalks(): { walks: number; quietSkips: number };
  /**
   * Runs a host tool (tar, find) as the sandbox's own user inside its
   * namespaces and cgroups, with a bare environment: how the server reads
   * and writes the workspace without ever resolving a path in it itself.
   */
  readonly io: WorkspaceIo;
  /** Adds a line from the server (e.g. what a save left out) to logs(). */
  note(line: string): void;
  /** Processes now running in the sandbox (running launches in rlimit mode). */
  processCount(): Promise<number>;
  /** Kills every process, removes the cgroups and (unless keepFiles) the sandbox's folder. */
  destroy(options?: { keepFiles?: boolean }): Promise<void>;
  readonly destroyed: boolean;
}

/** Raised for operations on a destroyed sandbox. */
export class SandboxDestroyedError extends Error {
  override name = "SandboxDestroyedError";
}

const SIGXFSZ_STATUS = 128 + 25;

const limitModeCache = new Map<string, Promise<{ mode: LimitMode; detail: string }>>();

/** What sandboxes on this host get, for startup logs and /health. */
export async function describeSandboxHost(options: {
  allowUnisolated?: boolean;
  isolation?: IsolationKind;
  limitMode?: LimitMode;
  user?: { uid?: number; gid?: number };
} & LimitHost = {}): Promise<IsolationReport & { limitMode: LimitMode; limitDetail: string }> {
  const user = sandboxUserFor(options.user);
  const report = await detectIsolation({ allowUnisolated: options.allowUnisolated ?? false, user, force: options.isolation });
  const limits = options.limitMode
    ? { mode: options.limitMode, detail: `forced: ${options.limitMode}` }
    : await cachedLimitMode(options);
  return { ...report, limitMode: limits.mode, limitDetail: limits.detail };
}

function cachedLimitMode(host: LimitHost) {
  const key = `${host.cgroup2Root ?? process.env.ASH_CGROUP_ROOT ?? ""}|${host.cgroup1Parent ?? ""}`;
  let found = limitModeCache.get(key);
  if (!found) {
    found = detectLimitMode(host);
    limitModeCache.set(key, found);
  }
  return found;
}

/** A non-root server cannot change uid: it keeps its own. */
function sandboxUserFor(ids: { uid?: number; gid?: number } | undefined): SandboxUser | null {
  if (process.getuid?.() !== 0) return null;
  return resolveSandboxUser(ids);
}

/** Makes `path` and everything under it (not following symlinks) belong to the user. */
async function chownTree(path: string, user: SandboxUser): Promise<void> {
  const info = await lstat(path);
  if (info.uid !== user.uid || info.gid !== user.gid) await chown(path, user.uid, user.gid).catch(() => {});
  if (!info.isDirectory()) return;
  for (const name of await readdir(path)) {
    const child = join(path, name);
    const childInfo = await lstat(child);
    if (childInfo.isSymbolicLink()) await lchown(child, user.uid, user.gid).catch(() => {});
    else await chownTree(child, user);
  }
}

function isInside(parent: string, path: string): boolean {
  const rel = relative(parent, path);
  return rel === "" || (rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** Creates the sandbox's folders and resource group. Nothing runs until spawnClaudeCode or exec. */
export async function createSandbox(options: CreateSandboxOptions): Promise<Sandbox> {
  const id = options.id ?? randomUUID();
  if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(id) || id.length > 128) {
    throw new Error(`Invalid sandbox id: ${JSON.stringify(id)}`);
  }
  if (!isAbsolute(options.dataDir)) throw new Error(`dataDir must be absolute: ${options.dataDir}`);
  const limits = validateLimits({ ...DEFAULT_LIMITS, ...options.limits });
  for (const path of options.readOnlyPaths ?? []) {
    if (!isAbsolute(path)) throw new Error(`Read-only sandbox path must be absolute: ${path}`);
  }
  const rootDir = join(resolve(options.dataDir), "sandboxes", id);
  const workspaceDir = join(rootDir, "workspace");
  const homeDir = join(rootDir, "home");
  const configDir = join(homeDir, ".claude");
  // Checks the declared env now, so a bad name fails here and not at spawn.
  buildSandboxEnv({ dirs: { homeDir, configDir }, declared: options.env });

  const user = sandboxUserFor(options.user);
  const host = await describeSandboxHost(options);
  const isolation: IsolationReport = { isolation: host.isolation, allowUnisolated: host.allowUnisolated, seccomp: host.seccomp, detail: host.detail };
  const tools: SandboxTools = findSandboxTools();

  const group = await createResourceGroup(host.limitMode, id, limits, options);
  /** The group's CPU shares at niceness 0 (the configured ones, else the kernel's default). */
  const baseShares = limits.cpuShares ?? NORMAL_CPU_SHARES;
  try {
    await mkdir(join(resolve(options.dataDir), "sandboxes"), { recursive: true });
    // Without bwrap the sandbox user reaches its folder through the data dir's own
    // path, so the data dir (0700 otherwise) must be traversable, not readable.
    if (isolation.isolation === "none" && user) {
      for (const dir of [resolve(options.dataDir), join(resolve(options.dataDir), "sandboxes")]) {
        await chmod(dir, ((await lstat(dir)).mode & 0o777) | 0o011);
      }
    }
    // The sandbox root is only traversable: without bwrap, one sandbox user
    // cannot list the others' folders.
    await mkdir(rootDir, { recursive: true, mode: 0o711 });
    await chmod(rootDir, 0o711);
    for (const dir of [workspaceDir, homeDir, configDir]) await mkdir(dir, { recursive: true, mode: 0o700 });
    await options.populate?.({ workspaceDir, homeDir, configDir });
    if (user) for (const dir of [workspaceDir, homeDir]) await chownTree(dir, user);
  } catch (error) {
    await group.destroy().catch(() => {});
    throw error;
  }
  let network: SandboxNetwork;
  try {
    network = await openSandboxNetwork({
      dir: join(rootDir, "net"),
      services: options.network?.services ?? [],
      isolated: isolation.isolation === "bwrap",
      tools,
    });
  } catch (error) {
    await group.destroy().catch(() => {});
    await removeTree(rootDir);
    throw error;
  }
  const networkEnv = options.network?.env?.(network.addresses) ?? {};
  const baseReadOnly = [dirname(process.execPath), ...(options.readOnlyPaths ?? [])];
  const context: LaunchContext = {
    isolation: isolation.isolation,
    tools,
    user,
    group,
    mount: { workspaceDir, homeDir, readOnlyPaths: baseReadOnly, tmpSizeBytes: mib(limits.diskMb) },
    netnsFd: network.nsFd,
  };

  const logs = new LogBuffer(options.logCapacity);
  const running = new Set<Launch>();
  let lastReason: LimitReason | null = null;
  let diskKills = 0;
  let destroyed = false;
  /** Launches alive when the disk limit was passed. */
  const diskKilled = new WeakSet<Launch>();

  const measure = () => measureDiskUsage(rootDir, [basename(workspaceDir), basename(homeDir)], { user, setpriv: tools.setpriv });
  const watcher = new DiskWatcher(
    measure,
    mib(limits.diskMb),
    () => {
      for (const launched of running) {
        diskKilled.add(launched);
        launched.killTree();
      }
      void group.killAll().catch(() => {});
      lastReason = "sandbox_disk";
      diskKills++;
      // Measure again later: if it is still over, the next process dies too.
      setTimeout(() => watcher.rearm(), 0).unref();
    },
    options.diskCheckIntervalMs ?? 1000,
    undefined,
    // A sandbox that used almost no CPU since the last walk (an agent waiting for its next message, a
    // spare) has not written much either: it is walked every few seconds instead of every second.
    group.cpuUsageNs ? { cpuUsageNs: () => group.cpuUsageNs!() } : undefined,
  );
  // Under bwrap every launch is a pid namespace of its own that dies with it, so once the last launch
  // has exited nothing in the sandbox can write: the watcher measures only while something runs (an
  // idle session's sandbox was measured every second for nothing). Without bwrap a background
  // process may outlive its launch, so it measures all along.
  const watchWhileRunning = context.isolation === "bwrap";
  const followActivity = () => {
    if (!watchWhileRunning) return;
    if (running.size + ioRunning.size > 0) watcher.start();
    else watcher.pause();
  };
  if (!watchWhileRunning) watcher.start();

  async function decideReason(
    launched: Launch,
    exit: { code: number | null; signal: NodeJS.Signals | null },
  ): Promise<LimitReason | null> {
    running.delete(launched);
    followActivity();
    let reason: LimitReason | null = null;
    if (diskKilled.has(launched)) reason = "sandbox_disk";
    else if (exit.code !== 0) {
      const after = group.counters();
      if (after.oomKills > launched.countersBefore.oomKills) reason = "sandbox_oom";
      else if (after.pidsMaxHits > launched.countersBefore.pidsMaxHits) reason = "sandbox_pids";
      else if (exit.code === SIGXFSZ_STATUS || exit.signal === "SIGXFSZ") {
        reason = "sandbox_disk";
        diskKills++; // a file hit the size rlimit: counted like a watcher kill
      }
    }
    if (reason) lastReason = reason;
    return reason;
  }

  function assertAlive(): void {
    if (destroyed) throw new SandboxDestroyedError(`Sandbox ${id} is destroyed`);
  }

  function resolveCwd(cwd: string | undefined): string {
    if (cwd === undefined) return workspaceDir;
    const full = isAbsolute(cwd) ? resolve(cwd) : resolve(workspaceDir, cwd);
    if (!isInside(workspaceDir, full)) {
      throw new Error(`Working directory ${cwd} is outside the sandbox workspace ${workspaceDir}`);
    }
    return full;
  }

  /** Workspace I/O processes: killed on destroy like the rest, but they never decide a limit reason. */
  const ioRunning = new Set<Launch>();
  const io: WorkspaceIo = {
    root: workspaceDir,
    run(command, args, runOptions = {}) {
      assertAlive();
      const launched = launch(context, { command, args, env: { ...IO_ENV, HOME: homeDir }, cwd: workspaceDir, stdin: runOptions.stdin ? "pipe" : "ignore" });
      ioRunning.add(launched);
      followActivity();
      void launched.exited.then(() => {
        ioRunning.delete(launched);
        followActivity();
      });
      return ioProcessOf(launched, launched.exited, () => launched.killTree());
    },
  };

  function start(command: string, args: string[], env: Record<string, string>, cwd: string, stdin: "pipe" | "ignore", extraReadOnly: string[], nice?: number) {
    const ctx = extraReadOnly.length
      ? { ...context, mount: { ...context.mount, readOnlyPaths: [...context.mount.readOnlyPaths, ...extraReadOnly] } }
      : context;
    const launched = launch(ctx, { command, args, env, cwd, stdin, nice });
    running.add(launched);
    followActivity();
    return launched;
  }

  const spawnClaudeCode = (spawnOptions: SpawnOptions, how: { nice?: number } = {}): SpawnedProcess => {
    assertAlive();
    // The agent would find its model gateway gone: the caller resumes the bridges first.
    if (network.suspended) throw new Error("The sandbox's network bridges are stopped; resume them before starting the agent");
    const env = { ...buildSandboxEnv({ dirs: { homeDir, configDir }, passed: spawnOptions.env, declared: options.env }), ...networkEnv };
    const cwd = resolveCwd(spawnOptions.cwd);
    // The CLI binary (or node's script) usually lives in node_modules, which no system mount covers.
    const extra: string[] = [];
    const commandDir = executableDir(spawnOptions.command);
    if (commandDir) extra.push(commandDir);
    const script = spawnOptions.args[0];
    if (script && isAbsolute(script) && /\.[cm]?js$/.test(script)) extra.push(dirname(script));
    // Its group's weight follows: niceness alone orders processes only within the sandbox's own group.
    if (how.nice !== undefined) group.setCpuShares?.(sharesForNice(baseShares, how.nice));
    const launched = start(spawnOptions.command, spawnOptions.args, env, cwd, "pipe", extra, how.nice);
    const processHandle = new SandboxedProcess(
      launched,
      (exit) => decideReason(launched, exit),
      () => logs.push({ at: Date.now(), source: "server", stream: "stderr", line: `the agent process wrote a line of more than ${MAX_STDOUT_LINE_BYTES} bytes; it was stopped` }),
    );
    const stderrLog = logs.writer("claude", "stderr");
    launched.stderr.on("data", (chunk: Buffer) => stderrLog.write(chunk));
    launched.stderr.on("end", () => stderrLog.end());
    // The SDK aborts this signal only after its own graceful close.
    const onAbort = () => processHandle.kill("SIGKILL");
    if (spawnOptions.signal.aborted) onAbort();
    else spawnOptions.signal.addEventListener("abort", onAbort, { once: true });
    processHandle.once("exit", () => spawnOptions.signal.removeEventListener("abort", onAbort));
    return processHandle;
  };

  async function exec(command: string, execOptions: ExecOptions = {}): Promise<ExecResult> {
    assertAlive();
    if (typeof command !== "string" || command.length === 0) throw new Error("exec needs a non-empty command string");
    const timeoutMs = execOptions.timeoutMs ?? 60_000;
    const cap = execOptions.maxOutputBytes ?? 1024 * 1024;
    if (!(timeoutMs > 0)) throw new Error(`exec timeoutMs must be positive, got ${timeoutMs}`);
    if (!(cap >= 0)) throw new Error(`exec maxOutputBytes must be >= 0, got ${cap}`);
    // No model key here: exec runs what an API caller asked for, not the agent's CLI.
    const declared = { ...withoutModelSettings(options.env ?? {}), ...execOptions.env };
    const env = { ...buildSandboxEnv({ dirs: { homeDir, configDir }, declared }), ...(withoutModelSettings(networkEnv) as Record<string, string>) };
    const cwd = resolveCwd(execOptions.cwd);
    await network.resume();
    const launched = start("/bin/sh", ["-c", command], env, cwd, execOptions.stdin === undefined ? "ignore" : "pipe", []);
    if (execOptions.stdin !== undefined) {
      launched.stdin!.on("error", () => {});
      launched.stdin!.end(execOptions.stdin);
    }

    let truncated = false;
    const collect = (stream: NodeJS.ReadableStream, name: "stdout" | "stderr") => {
      const chunks: Buffer[] = [];
      let size = 0;
      const log = logs.writer("exec", name);
      stream.on("data", (chunk: Buffer) => {
        log.write(chunk);
        if (size >= cap) {
          truncated = true;
          return;
        }
        const room = cap - size;
        if (chunk.length > room) truncated = true;
        const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
        chunks.push(kept);
        size += kept.length;
      });
      return new Promise<string>((done) => {
        stream.on("end", () => {
          log.end();
          done(Buffer.concat(chunks).toString("utf8"));
        });
        stream.on("error", () => done(Buffer.concat(chunks).toString("utf8")));
      });
    };
    const stdout = collect(launched.stdout, "stdout");
    const stderr = collect(launched.stderr, "stderr");

    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      launched.killTree();
    }, timeoutMs);
    const exit = await launched.exited;
    clearTimeout(timer);
    // Without bwrap, background children outlive sh: end them with it.
    if (context.isolation === "none") launched.killTree();
    const limitReason = await decideReason(launched, exit);
    return {
      exitCode: exit.code,
      signal: exit.signal,
      stdout: await stdout,
      stderr: await stderr,
      timedOut,
      truncated,
      limitReason,
    };
  }

  async function destroy(destroyOptions: { keepFiles?: boolean } = {}): Promise<void> {
    if (destroyed) return;
    destroyed = true;
    watcher.stop();
    const all = [...running, ...ioRunning];
    for (const launched of all) launched.killTree();
    await Promise.all(all.map((launched) => launched.exited));
    // Kills whatever is left in the cgroups and waits until they are empty.
    await group.destroy();
    await network.close();
    // Only now, with no process of the sandbox left to race it (rm never follows
    // symlinks, and has no path-length limit however deep the sandbox nested folders).
    if (destroyOptions.keepFiles) return;
    if (options.trash) await options.trash.discard(rootDir);
    else await removeTree(rootDir);
  }

  return {
    id,
    rootDir,
    workspaceDir,
    homeDir,
    configDir,
    user,
    isolation,
    limitMode: group.mode,
    limits,
    networkAddresses: network.addresses,
    enforced: {
      // In rlimit mode memory and processes are rlimits, which need prlimit.
      memory: group.enforced.memory && (group.mode !== "rlimit" || Boolean(tools.prlimit)),
      processes: group.enforced.processes && (group.mode !== "rlimit" || Boolean(tools.prlimit)),
      cpu: group.enforced.cpu && limits.cpuPercent !== undefined,
      fileSize: Boolean(tools.prlimit),
    },
    spawnClaudeCode,
    renice(nice) {
      if (!destroyed) group.setCpuShares?.(sharesForNice(baseShares, nice));
      for (const launched of running) launched.renice(nice);
    },
    exec,
    suspendNetwork: () => (destroyed ? Promise.resolve() : network.suspend()),
    resumeNetwork: () => {
      assertAlive();
      return network.resume();
    },
    logs: (limit) => logs.recent(limit),
    limitKillReason: () => lastReason,
    limitCounters: () => ({ ...group.counters(), diskKills }),
    diskUsage: measure,
    diskWalks: () => ({ walks: watcher.walks, quietSkips: watcher.quietSkips }),
    io,
    note: (line) => logs.push({ at: Date.now(), source: "server", stream: "stderr", line }),
    async processCount() {
      const members = await group.members();
      return group.procsFiles.length ? members.length : running.size;
    },
    destroy,
    get destroyed() {
      return destroyed;
    },
  };
}
