import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { setPriority } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import type { Readable, Writable } from "node:stream";
import { bwrapOptions, setprivArgs, type IsolationKind, type MountPlan, type SandboxTools } from "./isolation";
import type { LimitCounters, ResourceGroup, RlimitSettings } from "./limits";
import { sandboxSeccompProgram } from "./seccomp";
import type { SandboxUser } from "./user";

/** What every process of one sandbox shares. */
export interface LaunchContext {
  isolation: IsolationKind;
  tools: SandboxTools;
  /** null: keep the server's own user (it is not root, so it cannot switch). */
  user: SandboxUser | null;
  group: ResourceGroup;
  mount: Omit<MountPlan, "cwd">;
  /** The sandbox's network namespace (egress-net.ts): every process joins it before bwrap. */
  netnsFd?: number;
}

export interface LaunchRequest {
  command: string;
  args: string[];
  /** The complete environment of the sandboxed process. */
  env: Record<string, string>;
  /** Absolute, inside the workspace. */
  cwd: string;
  stdin: "pipe" | "ignore";
  /** Niceness to start at (0 to 19): every process of the launch inherits it; renice() changes it later. */
  nice?: number;
}

export interface Launch {
  child: ChildProcess;
  stdin: Writable | null;
  stdout: Readable;
  stderr: Readable;
  /** Limit counters read just before the process started. */
  countersBefore: LimitCounters;
  /** Sends a signal to the sandboxed command itself (not bwrap's supervisor or init); false if nothing got it. */
  signal(signal: NodeJS.Signals): boolean;
  /** SIGKILLs the whole launch: supervisor, command and everything it started. */
  killTree(): void;
  /** Sets the niceness of every process (and thread) of the launch now: a claimed spare gets the priority of turns. */
  renice(nice: number): void;
  /** Settles when the supervisor process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Exit status of the wrapper when it could not join a cgroup. */
const JOIN_GROUP_FAILED = 125;

// Joins the cgroups named before "--" (so nothing runs outside them, not
// even bwrap), then becomes the rest of the command line.
const JOIN_GROUPS_SCRIPT = `while [ "$#" -gt 0 ] && [ "$1" != -- ]; do echo $$ > "$1" || { echo "ash-sandbox: cannot join cgroup $1" >&2; exit ${JOIN_GROUP_FAILED}; }; shift; done; shift; exec "$@"`;

const ARGS_FD = 3;
const STATUS_FD = 4;
/** bwrap reads the seccomp filter (see seccomp.ts) from here. */
const SECCOMP_FD = 5;
/** nsenter joins the network namespace held open at this descriptor. */
const NETNS_FD = 6;

/** Exit status of the wrapper when it could not take in the sandboxed process's environment. */
const ENV_FAILED = 124;

/**
 * Everything before the user switch (sh, prlimit, nice, nsenter, bwrap,
 * setpriv) runs as root: it gets this environment and nothing of the
 * sandbox's, whose variables a tenant names (LD_PRELOAD or LD_LIBRARY_PATH
 * there would make root load a library from the workspace). The sandboxed
 * process's own environment is read from ENV_FD by a shell that runs as the
 * sandbox user, after setpriv, and then becomes the command.
 */
const LAUNCHER_ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" };
const ENV_FD = 7;
// Read with cat (node's stdio pipes are socket pairs, which /dev/fd/N cannot open), kept in $1 so no
// name of the environment can clash with the shell's own variable.
const APPLY_ENV_SCRIPT = `set -- "$(cat <&${ENV_FD})" "$@" || exit ${ENV_FAILED}; exec ${NETNS_FD}<&- ${ENV_FD}<&-; set -a; eval "$1" || exit ${ENV_FAILED}; set +a; shift; exec "$@"`;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The environment as lines a POSIX shell reads back exactly: NAME='value', quotes escaped. */
export function shellEnvText(env: Record<string, string>): string {
  let text = "";
  for (const [name, value] of Object.entries(env)) {
    if (!ENV_NAME.test(name)) throw new Error(`Invalid environment variable name: ${JSON.stringify(name)}`);
    if (value.includes("\0")) throw new Error(`Environment variable ${name} contains a NUL byte`);
    text += `${name}='${value.replaceAll("'", "'\\''")}'\n`;
  }
  return text;
}

function prlimitArgs(prlimit: string | undefined, limits: RlimitSettings): string[] {
  const options: string[] = [];
  if (limits.fileSizeBytes !== undefined) options.push(`--fsize=${limits.fileSizeBytes}`);
  if (limits.dataBytes !== undefined) options.push(`--data=${limits.dataBytes}`);
  if (limits.processes !== undefined) options.push(`--nproc=${limits.processes}`);
  if (!prlimit || options.length === 0) return [];
  return [prlimit, ...options, "--"];
}

/** Waits (bounded) until a pid no longer runs; zombies count as gone. True when it is gone. */
export async function untilGone(pid: number, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let state: string;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    } catch {
      return true;
    }
    if (state === "Z" || state === "X") return true;
    if (Date.now() >= deadline) return false;
    await sleep(10);
  }
}

function commandName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return undefined;
  }
}

/** Direct children of a process, from /proc (falls back to scanning ppids). */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    const found: number[] = [];
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid) found.push(Number(entry));
      } catch {
        // exited meanwhile
      }
    }
    return found;
  }
}

/** Starts one process inside the sandbox: cgroups first, then rlimits, then bwrap, then the user switch. */
export function launch(ctx: LaunchContext, request: LaunchRequest): Launch {
  const countersBefore = ctx.group.counters();
  const switchUser = ctx.user ? setprivArgs(ctx.tools.setpriv!, ctx.user) : [];
  const limited = prlimitArgs(ctx.tools.prlimit, ctx.group.rlimits);
  const useBwrap = ctx.isolation === "bwrap";
  const joinNet = useBwrap && ctx.netnsFd !== undefined;
  if (joinNet && !ctx.tools.nsenter) throw new Error("nsenter (util-linux) is needed to join the sandbox's network namespace");
  const enterNet = joinNet ? [ctx.tools.nsenter!, `--net=/proc/self/fd/${NETNS_FD}`] : [];
  const envText = shellEnvText(request.env);
  const applyEnv = ["/bin/sh", "-c", APPLY_ENV_SCRIPT, "ash-env", request.command, ...request.args];
  const inner = useBwrap
    ? [...enterNet, ctx.tools.bwrap!, "--args", String(ARGS_FD), "--json-status-fd", String(STATUS_FD), "--seccomp", String(SECCOMP_FD), "--", ...switchUser, ...applyEnv]
    : [...switchUser, ...applyEnv];
  const lowered = request.nice && ctx.tools.nice ? [ctx.tools.nice, "-n", String(request.nice)] : [];
  const argv = ["-c", JOIN_GROUPS_SCRIPT, "ash-sandbox", ...ctx.group.procsFiles, "--", ...lowered, ...limited, ...inner];

  const child = spawn("/bin/sh", argv, {
    // bwrap changes into the workspace inside the sandbox; root's own processes stay out of it.
    cwd: useBwrap ? "/" : request.cwd,
    env: LAUNCHER_ENV,
    stdio: [
      request.stdin,
      "pipe",
      "pipe",
      useBwrap ? "pipe" : "ignore",
      useBwrap ? "pipe" : "ignore",
      useBwrap ? "pipe" : "ignore",
      joinNet ? ctx.netnsFd! : "ignore",
      "pipe",
    ],
    // Own process group: a timeout or destroy can kill everything it started.
    detached: true,
  });

  const envPipe = (child.stdio as unknown as Writable[])[ENV_FD]!;
  envPipe.on("error", () => {});
  envPipe.end(envText);

  // bwrap reports the pid of the namespace's init (its own reaper); the
  // command is that process's child.
  let initPid: number | undefined;
  if (useBwrap) {
    // bwrap reads its options from a pipe so they do not show up in the
    // command line of pid 1, which the sandboxed process can read.
    const argsPipe = child.stdio[ARGS_FD] as Writable;
    argsPipe.on("error", () => {});
    const options = bwrapOptions({ ...ctx.mount, cwd: request.cwd });
    argsPipe.end(Buffer.from(options.map((option) => `${option}\0`).join("")));
    const seccompPipe = (child.stdio as unknown as Writable[])[SECCOMP_FD]!;
    seccompPipe.on("error", () => {});
    seccompPipe.end(sandboxSeccompProgram());
    const status = child.stdio[STATUS_FD] as Readable;
    let pending = "";
    status.on("data", (chunk: Buffer) => {
      pending += chunk.toString("utf8");
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        try {
          const info = JSON.parse(line) as { "child-pid"?: number };
          if (typeof info["child-pid"] === "number") initPid = info["child-pid"];
        } catch {
          // not a status line
        }
      }
    });
    status.on("error", () => {});
  }

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    // When bwrap's supervisor dies its init normally follows (die-with-parent)
    // and the kernel tears the namespace down. A kill that lands while bwrap
    // is still setting up can beat that, so an init still there after a
    // moment is killed directly. "exited" means nothing is left.
    child.once("exit", (code, signal) =>
      void (async () => {
        if (initPid !== undefined && !(await untilGone(initPid, 200)) && commandName(initPid) === "bwrap") {
          try {
            process.kill(initPid, "SIGKILL");
          } catch {
            // gone meanwhile
          }
          await untilGone(initPid);
        }
        resolve({ code, signal });
      })(),
    );
    child.once("error", () => resolve({ code: null, signal: null }));
  });
  let running = true;
  void exited.then(() => {
    running = false;
  });

  return {
    child,
    stdin: child.stdin,
    stdout: child.stdout!,
    stderr: child.stderr!,
    countersBefore,
    signal(signal) {
      if (!running) return false;
      const targets = useBwrap ? (initPid === undefined ? [] : childrenOf(initPid)) : child.pid === undefined ? [] : [child.pid];
      let sent = false;
      for (const pid of targets) {
        try {
          process.kill(pid, signal);
          sent = true;
        } catch {
          // gone meanwhile
        }
      }
      return sent;
    },
    renice(nice) {
      if (child.pid === undefined || !running) return;
      const seen = new Set<number>();
      const visit = (pid: number) => {
        if (seen.has(pid)) return;
        seen.add(pid);
        let tasks: string[] = [];
        try {
          tasks = readdirSync(`/proc/${pid}/task`);
        } catch {
          return; // gone
        }
        for (const tid of tasks) {
          try {
            setPriority(Number(tid), nice);
          } catch {
            // exited meanwhile
          }
        }
        for (const c of childrenOf(pid)) visit(c);
      };
      visit(child.pid);
    },
    killTree() {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // group already empty
      }
    },
    exited,
  };
}
