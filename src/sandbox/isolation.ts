import { spawn } from "node:child_process";
import { lstatSync, mkdtempSync, mkdirSync, chownSync, readlinkSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, isAbsolute, join, sep } from "node:path";
import type { Writable } from "node:stream";
import { findExecutable } from "./executables";
import { sandboxSeccompProgram } from "./seccomp";
import type { SandboxUser } from "./user";

export type IsolationKind = "bwrap" | "none";

/** Which isolation sandboxes get on this host, and why. */
export interface IsolationReport {
  isolation: IsolationKind;
  /** True when sandboxes without bwrap were explicitly allowed (they are refused otherwise). */
  allowUnisolated: boolean;
  /** True when the seccomp filter (seccomp.ts) is loaded in every sandbox. */
  seccomp: boolean;
  /** One sentence for logs and /health: what runs and what is missing. */
  detail: string;
}

/** Raised when bwrap cannot be used and unisolated sandboxes were not explicitly allowed. */
export class SandboxIsolationError extends Error {
  override name = "SandboxIsolationError";
  constructor(
    /** Why bwrap cannot be used here. */
    readonly reason: string,
  ) {
    super(`Sandbox isolation is required but unavailable: ${reason}`);
  }
}

/** System trees every sandbox sees read-only. Symlinks (usrmerge) are recreated as symlinks. */
export const SYSTEM_READ_ONLY_PATHS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"];

/** What one sandboxed process may see and where it starts. */
export interface MountPlan {
  /** The sandbox's live working directory: read-write. */
  workspaceDir: string;
  /** The sandbox's private HOME (and config dir): read-write. */
  homeDir: string;
  /** Extra directories shown read-only (the CLI binary's folder, node's folder, ...). */
  readOnlyPaths: string[];
  /** Working directory inside the sandbox; must be the workspace or below it. */
  cwd: string;
  /** Size of the private /tmp (a tmpfs, charged to the sandbox's memory). */
  tmpSizeBytes: number;
}

/** The bwrap options (without the command) that build the sandbox's filesystem and namespaces. */
export function bwrapOptions(plan: MountPlan): string[] {
  const args: string[] = [];
  const hostMounts: string[] = [];
  for (const path of SYSTEM_READ_ONLY_PATHS) {
    let info;
    try {
      info = lstatSync(path);
    } catch {
      continue;
    }
    if (info.isSymbolicLink()) args.push("--symlink", readlinkSync(path), path);
    else if (info.isDirectory()) {
      args.push("--ro-bind", path, path);
      hostMounts.push(path);
    }
  }
  args.push(
    "--proc", "/proc",
    "--dev", "/dev",
    "--perms", "1777", "--tmpfs", "/dev/shm",
    "--perms", "1777", "--size", String(plan.tmpSizeBytes), "--tmpfs", "/tmp",
  );
  const created = new Set<string>(["/", "/tmp", "/dev", "/proc"]);
  // bwrap makes missing parents of a mount point mode 0700, which would
  // stop the unprivileged user on the way to its own workspace: make them
  // 0755 first (they are empty skeletons in the sandbox's own root).
  const bind = (option: string, path: string) => {
    const parents: string[] = [];
    for (let dir = dirname(path); !created.has(dir) && !isInside(hostMounts, dir); dir = dirname(dir)) parents.unshift(dir);
    for (const dir of parents) {
      args.push("--perms", "0755", "--dir", dir);
      created.add(dir);
    }
    args.push(option, path, path);
    hostMounts.push(path);
  };
  for (const path of uniqueOutside(plan.readOnlyPaths, hostMounts)) bind("--ro-bind", path);
  // Last, so they win over anything above that happens to contain them.
  bind("--bind", plan.workspaceDir);
  bind("--bind", plan.homeDir);
  args.push(
    "--chdir", plan.cwd,
    "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "sandbox",
    "--die-with-parent", "--new-session",
  );
  return args;
}

function isInside(parents: string[], path: string): boolean {
  return parents.some((parent) => path === parent || path.startsWith(parent + sep));
}

/** Directories (real paths) not already inside one of `covered`, without repeats. */
function uniqueOutside(paths: string[], covered: string[]): string[] {
  const out: string[] = [];
  for (const raw of paths) {
    if (!isAbsolute(raw)) throw new Error(`Read-only sandbox path must be absolute: ${raw}`);
    let real: string;
    try {
      real = realpathSync(raw);
    } catch {
      continue;
    }
    if (isInside(covered, real) || isInside(out, real)) continue;
    out.push(real);
  }
  return out;
}

/**
 * The directory that holds an executable, for showing it read-only: the
 * Claude Code binary lives in node_modules, which no system mount covers.
 */
export function executableDir(command: string): string | undefined {
  const path = isAbsolute(command) ? command : findExecutable(command);
  if (!path) return undefined;
  try {
    return dirname(realpathSync(path));
  } catch {
    return undefined;
  }
}

/**
 * `setpriv` switches to the sandbox user after bwrap has built the mounts
 * (which needs root): real uid/gid change, no supplementary groups, no
 * capabilities in any set, no way to regain privileges through setuid
 * binaries, and SIGKILL when its parent dies.
 */
export function setprivArgs(setpriv: string, user: SandboxUser, keep?: string): string[] {
  // `keep`: one capability the command keeps (ambient), for the server's own tools only (disk-usage.ts).
  return [
    setpriv,
    `--reuid=${user.uid}`,
    `--regid=${user.gid}`,
    "--clear-groups",
    ...(keep ? [`--inh-caps=-all,+${keep}`, `--ambient-caps=+${keep}`, `--bounding-set=-all,+${keep}`] : ["--inh-caps=-all", "--bounding-set=-all"]),
    "--no-new-privs",
    // Dies with its parent: without bwrap nothing else ends it if the server dies.
    "--pdeathsig=SIGKILL",
  ];
}

/** Host tools the sandbox uses, resolved once. */
export interface SandboxTools {
  bwrap?: string;
  setpriv?: string;
  prlimit?: string;
  /** Joins a sandbox's network namespace (egress-net.ts). */
  nsenter?: string;
  /** Bridges a sandbox's loopback ports to the server's unix sockets. */
  socat?: string;
  /** Starts a process at a lower CPU priority (warm spares). */
  nice?: string;
}

export function findSandboxTools(): SandboxTools {
  return {
    bwrap: findExecutable("bwrap"),
    setpriv: findExecutable("setpriv"),
    prlimit: findExecutable("prlimit"),
    nsenter: findExecutable("nsenter"),
    socat: findExecutable("socat"),
    nice: findExecutable("nice"),
  };
}

const probes = new Map<string, Promise<{ ok: boolean; detail: string }>>();

/**
 * Runs a trivial command through the full bwrap + setpriv chain once per
 * (bwrap, user) pair and caches the answer: bwrap being installed says
 * nothing about whether this kernel and these capabilities let it mount.
 */
export function probeBwrap(tools: SandboxTools, user: SandboxUser | null): Promise<{ ok: boolean; detail: string }> {
  const key = `${tools.bwrap}|${tools.setpriv}|${user?.uid}:${user?.gid}`;
  let probe = probes.get(key);
  if (!probe) {
    probe = runProbe(tools, user);
    probes.set(key, probe);
  }
  return probe;
}

async function runProbe(tools: SandboxTools, user: SandboxUser | null): Promise<{ ok: boolean; detail: string }> {
  if (!tools.bwrap) return { ok: false, detail: "bwrap is not installed" };
  if (user && !tools.setpriv) return { ok: false, detail: "setpriv is not installed" };
  const root = mkdtempSync(join(tmpdir(), "ash-bwrap-probe-"));
  try {
    const workspaceDir = join(root, "workspace");
    const homeDir = join(root, "home");
    for (const dir of [workspaceDir, homeDir]) {
      mkdirSync(dir);
      if (user) chownSync(dir, user.uid, user.gid);
    }
    // A file next to the workspace that must stay invisible inside.
    const hidden = join(root, "hidden");
    writeFileSync(hidden, "");
    const expectedUid = user ? user.uid : process.getuid?.() ?? 0;
    const argv = [
      ...bwrapOptions({ workspaceDir, homeDir, readOnlyPaths: [], cwd: workspaceDir, tmpSizeBytes: 1 << 20 }),
      // The same filter as every launch, so a kernel that cannot load it fails here, not per session.
      "--seccomp", "3",
      "--",
      ...(user ? setprivArgs(tools.setpriv!, user) : []),
      "/bin/sh", "-c",
      `test "$(id -u)" = ${expectedUid} && touch probe && test ! -e '${hidden}' && grep -q '^Seccomp:[[:space:]]*2' /proc/self/status && echo sandboxed`,
    ];
    const { code, stdout, stderr } = await run(tools.bwrap, argv, 10_000, sandboxSeccompProgram());
    if (code === 0 && stdout.trim() === "sandboxed" && statSync(join(workspaceDir, "probe")).isFile()) {
      return { ok: true, detail: `bwrap works (${user ? `uid ${user.uid}` : "current user"})` };
    }
    return { ok: false, detail: `bwrap failed here (exit ${code}): ${stderr.trim().split("\n")[0] ?? ""}`.trim() };
  } catch (error) {
    return { ok: false, detail: `bwrap failed here: ${(error as Error).message}` };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

function run(command: string, args: string[], timeoutMs: number, fd3: Buffer): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe", "pipe"], env: { PATH: "/usr/bin:/bin" } });
    const input = child.stdio[3] as Writable;
    input.on("error", () => {});
    input.end(fd3);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Decides the isolation for new sandboxes. Without a working bwrap this
 * throws, unless `allowUnisolated` says running without isolation was
 * chosen on purpose. `force: "none"` skips bwrap (tests of that mode; it
 * needs `allowUnisolated` too).
 */
export async function detectIsolation(options: {
  allowUnisolated: boolean;
  user: SandboxUser | null;
  tools?: SandboxTools;
  force?: IsolationKind;
}): Promise<IsolationReport> {
  const tools = options.tools ?? findSandboxTools();
  const who = options.user ? `uid ${options.user.uid}` : "the server's own user";
  const probe =
    options.force === "none"
      ? { ok: false, detail: "bwrap turned off by configuration" }
      : await probeBwrap(tools, options.user);
  if (probe.ok) {
    return {
      isolation: "bwrap",
      allowUnisolated: options.allowUnisolated,
      seccomp: true,
      detail: `bwrap mount/pid/ipc/uts namespaces and a seccomp filter (no namespaces, mounts, keyring, bpf), running as ${who}`,
    };
  }
  if (!options.allowUnisolated || options.force === "bwrap") throw new SandboxIsolationError(probe.detail);
  return {
    isolation: "none",
    allowUnisolated: true,
    seccomp: false,
    detail: `UNISOLATED: no filesystem, process or system-call isolation (${probe.detail}); running as ${who} with the allowlisted environment only`,
  };
}
