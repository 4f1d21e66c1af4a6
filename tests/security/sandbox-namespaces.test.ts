// From inside a real sandbox, the calls that would give a session a new
// namespace (and with it root-in-namespace), mounts, the kernel keyring or
// eBPF fail; ordinary work does not. Run through createSandbox().exec and
// through the server's exec route.
import { existsSync, mkdtempSync, rmdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cgroup1Mounts } from "../../src/sandbox/cgroup1";
import { createSandbox, describeSandboxHost, sweepResourceGroups, type Sandbox } from "../../src/sandbox";
import { SYSCALL_NUMBERS, type SeccompArch } from "../../src/sandbox/seccomp";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";
import { sandboxProblem, skipUnlessReady } from "../helpers/requirements";

const host = await describeSandboxHost({ allowUnisolated: true });
const arch: SeccompArch | undefined = process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : undefined;
const skip = skipUnlessReady("namespace attacks", sandboxProblem(host) ?? (arch === undefined ? `no seccomp syscall table for ${process.arch}` : undefined));
const cgroupParent = `ash-test-ns-${process.pid}`;

const EPERM = 1;
const ENOSYS = 38;

/**
 * Makes each call with raw syscall numbers (through ctypes) and prints
 * `name errno` per line (errno 0: it worked). Arguments are chosen so that
 * without the filter each call fails differently or succeeds, never with
 * EPERM: an unknown keyctl/bpf command, a mount on a missing folder, setns
 * on a bad fd, perf/io_uring with bad arguments, clone3 with a too-small size.
 */
const PROBE = String.raw`
import ctypes, json, os, sys
nr = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
def call(name, number, *args):
    # Each call in its own child: a call that worked (a new user namespace)
    # must not change what the next one sees.
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    ctypes.set_errno(0)
    r = libc.syscall(L(number), *args)
    if r == 0 and name == "clone":
        os._exit(0)  # the clone's own child
    if r > 0 and name == "clone":
        os.waitpid(r, 0)
    print(name, 0 if r >= 0 else ctypes.get_errno(), flush=True)
    os._exit(0)
CLONE_NEWUSER, CLONE_NEWNS, SIGCHLD = 0x10000000, 0x00020000, 17
call("unshare_user", nr["unshare"], L(CLONE_NEWUSER))
call("unshare_user_mount", nr["unshare"], L(CLONE_NEWUSER | CLONE_NEWNS))
call("setns", nr["setns"], L(-1), L(0))
call("mount", nr["mount"], ctypes.c_char_p(b"none"), ctypes.c_char_p(b"/no-such-dir-ash"), ctypes.c_char_p(b"tmpfs"), L(0), ctypes.c_void_p(0))
call("keyctl", nr["keyctl"], L(9999), L(0), L(0), L(0), L(0))
call("add_key", nr["add_key"], ctypes.c_char_p(b"user"), ctypes.c_char_p(b"ash"), ctypes.c_char_p(b"x"), L(1), L(-3))
call("bpf", nr["bpf"], L(9999), ctypes.c_void_p(0), L(0))
call("perf_event_open", nr["perf_event_open"], ctypes.c_void_p(0), L(0), L(-1), L(-1), L(0))
call("userfaultfd", nr["userfaultfd"], L(1))  # UFFD_USER_MODE_ONLY: allowed without privileges
call("io_uring_setup", nr["io_uring_setup"], L(0), ctypes.c_void_p(0))
call("clone", nr["clone"], L(CLONE_NEWUSER | SIGCHLD), L(0), L(0), L(0), L(0))
call("clone3", nr["clone3"], ctypes.c_void_p(0), L(0))
`;

const EXPECTED_PROBE: Record<string, number> = {
  unshare_user: EPERM,
  unshare_user_mount: EPERM,
  setns: EPERM,
  mount: EPERM,
  keyctl: EPERM,
  add_key: EPERM,
  bpf: EPERM,
  perf_event_open: EPERM,
  userfaultfd: EPERM,
  io_uring_setup: EPERM,
  clone: EPERM,
  clone3: ENOSYS,
};

function probeCommand(): string {
  const numbers = JSON.stringify(SYSCALL_NUMBERS[arch ?? "x86_64"]);
  return `echo ${Buffer.from(PROBE).toString("base64")} | base64 -d > /tmp/probe.py && python3 /tmp/probe.py '${numbers}'`;
}

function parseProbe(stdout: string): Record<string, number> {
  return Object.fromEntries(
    stdout
      .trim()
      .split("\n")
      .filter(Boolean)
      .map((line) => {
        const [name, errno] = line.split(" ");
        return [name!, Number(errno)];
      }),
  );
}

/** What must fail: command → stderr it must show. */
const REFUSED: Array<[string, string, RegExp]> = [
  ["unshare -Ur (a user namespace with uid 0)", "unshare -Ur true", /Operation not permitted/],
  ["unshare -rm (user + mount namespace)", "unshare -rm true", /Operation not permitted/],
  ["unshare -rn (user + network namespace)", "unshare -rn true", /Operation not permitted/],
  ["unshare -rp --fork (user + pid namespace)", "unshare -rp --fork true", /Operation not permitted/],
];

/** Ordinary work that must keep working under the filter. */
const ALLOWED: Array<[string, string, string]> = [
  ["sh with a pipe and a background child", "(sleep 0.05; echo bg) & echo fg | tr a-z A-Z; wait", "FG\nbg\n"],
  ["node -e with a child process and worker threads", `node -e 'const {execFileSync}=require("child_process"); const {Worker}=require("worker_threads"); const out=execFileSync("/bin/echo",["child"]).toString().trim(); new Worker("require(\\"worker_threads\\").parentPort.postMessage(6*7)",{eval:true}).on("message",(m)=>console.log(out,m))'`, "child 42\n"],
  ["python3 with fork, a thread and subprocess", `python3 -c 'import os, threading, subprocess
pid = os.fork()
if pid == 0: os._exit(7)
_, status = os.waitpid(pid, 0)
t = threading.Thread(target=lambda: None); t.start(); t.join()
print(os.waitstatus_to_exitcode(status), subprocess.run(["echo", "sub"], capture_output=True, text=True).stdout.strip())'`, "7 sub\n"],
  ["git init, add and commit", "git init -q repo && cd repo && echo x > f && git add f && git -c user.name=t -c user.email=t@e commit -qm one && git log --format=%s", "one\n"],
  ["tar and zstd round trip", "mkdir d && echo data > d/f && tar -cf - d | zstd -q -c > d.tzst && rm -r d && zstd -dc d.tzst | tar -xf - && cat d/f", "data\n"],
  ["the filter is on and no-new-privs set", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -s '\\t ' ' '", "NoNewPrivs: 1\nSeccomp: 2\n"],
];

describe.skipIf(skip)("no namespaces, mounts, keyring or bpf inside a sandbox (createSandbox)", () => {
  let dataDir: string;
  let box: Sandbox;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "ash-ns-"));
    box = await createSandbox({ dataDir, cgroup1Parent: cgroupParent });
  });
  afterAll(async () => {
    await box?.destroy();
    await sweepResourceGroups("cgroup1", [], { cgroup1Parent: cgroupParent });
    for (const mount of Object.values(cgroup1Mounts())) if (existsSync(join(mount!, cgroupParent))) rmdirSync(join(mount!, cgroupParent));
    rmSync(dataDir, { recursive: true, force: true });
  });

  it.each(REFUSED)("refuses %s", async (_what, command, stderr) => {
    const r = await box.exec(command);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(stderr);
  });

  it("refuses unshare, setns, mount, keyctl, add_key, bpf, perf, userfaultfd, io_uring and clone(CLONE_NEWUSER) with EPERM, clone3 with ENOSYS", async () => {
    const r = await box.exec(probeCommand());
    expect(r.stderr).toBe("");
    expect(parseProbe(r.stdout)).toEqual(EXPECTED_PROBE);
  });

  it.each(ALLOWED)("still runs %s", async (_what, command, stdout) => {
    const r = await box.exec(command, { timeoutMs: 30_000 });
    expect({ exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr }).toEqual({ exitCode: 0, stdout, stderr: "" });
  });
});

describe.skipIf(skip)("no namespaces, mounts, keyring or bpf inside a session (server exec route)", () => {
  let server: TestServer;
  let session: { id: string };

  beforeAll(async () => {
    server = await startTestServer({ env: { ASH_DATABASE_URL: "" } });
    await server.api("/api/agents", { method: "POST", json: agentUpload("ns") });
    session = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "ns" } })).json()).session;
  });
  afterAll(async () => {
    await server?.dispose();
  });

  const exec = async (command: string) =>
    (await (await server.api(`/api/sessions/${session.id}/exec`, { method: "POST", json: { command, timeout: 30_000 } })).json()) as {
      exitCode: number;
      stdout: string;
      stderr: string;
    };

  it("reports bwrap with the seccomp filter in /health", async () => {
    const health = (await (await fetch(`${server.url}/health`)).json()) as any;
    expect(health.isolation).toEqual({ mode: "bwrap", seccomp: true, unisolatedAllowed: false });
  });

  it.each(REFUSED)("refuses %s", async (_what, command, stderr) => {
    const r = await exec(command);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(stderr);
  });

  it("refuses the raw calls the same way", async () => {
    const r = await exec(probeCommand());
    expect(r.stderr).toBe("");
    expect(parseProbe(r.stdout)).toEqual(EXPECTED_PROBE);
  });

  it.each(ALLOWED)("still runs %s", async (_what, command, stdout) => {
    const r = await exec(command);
    expect({ exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr }).toEqual({ exitCode: 0, stdout, stderr: "" });
  });
});
