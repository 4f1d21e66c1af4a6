// A session's environment variables are the tenant's to choose (extraEnv, an
// agent's env, a /v1 environment's config.env). They must reach only the
// sandboxed process, as the sandbox user: never the root-side launcher (sh,
// prlimit, nsenter, bwrap, setpriv), where LD_PRELOAD would make root load a
// library from the workspace. The attack: a library whose constructor leaves a
// marker on the host's /tmp, which the sandbox (with a /tmp of its own) cannot
// reach, preloaded through the session's environment.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cgroup1Mounts } from "../../src/sandbox/cgroup1";
import { createSandbox, describeSandboxHost, sweepResourceGroups, type Sandbox } from "../../src/sandbox";
import { shellEnvText } from "../../src/sandbox/launch";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";
import { sandboxProblem, skipUnlessReady } from "../helpers/requirements";

const host = await describeSandboxHost();
const skip = skipUnlessReady("environment attacks on the sandbox launcher", sandboxProblem(host));
const cgroupParent = `ash-test-env-${process.pid}`;

let work: string;
/** The compiled library, and the host path its constructor writes to (with the uid it ran as). */
let library: Buffer;
let marker: string;

function compileMarkerLibrary(dir: string, markerPath: string): Buffer {
  const source = join(dir, "p.c");
  writeFileSync(
    source,
    `#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {
  int fd = open(${JSON.stringify(markerPath)}, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return;
  char line[32];
  snprintf(line, sizeof line, "uid %d\\n", (int)getuid());
  write(fd, line, strlen(line));
  close(fd);
}
`,
  );
  const out = join(dir, "p.so");
  execFileSync("cc", ["-shared", "-fPIC", "-o", out, source]);
  return readFileSync(out);
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "ash-env-attack-"));
  marker = join(tmpdir(), `ash-preload-marker-${process.pid}`);
  library = compileMarkerLibrary(work, marker);
});
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(marker, { force: true });
});

describe("the environment as the sandboxed process gets it", () => {
  it("reads back exactly through a POSIX shell: quotes, newlines, $(...), backquotes and globs stay text", () => {
    const env = { A: "it's", B: "two\nlines\n", C: "$(touch /tmp/x) `id` $HOME *", D: "", E: "'\\''" };
    const out = execFileSync("/bin/sh", ["-c", `set -a; eval "$1"; set +a; env`, "sh", shellEnvText(env)], { env: {}, encoding: "utf8" });
    for (const [name, value] of Object.entries(env)) expect(out).toContain(`${name}=${value}\n`);
  });

  it("refuses a name a shell would not read as one variable", () => {
    expect(() => shellEnvText({ "A;touch /tmp/x": "1" })).toThrow(/Invalid environment variable name/);
    expect(() => shellEnvText({ "A=B": "1" })).toThrow(/Invalid environment variable name/);
    expect(() => shellEnvText({ A: "x\0y" })).toThrow(/NUL/);
  });
});

describe.skipIf(skip)("LD_PRELOAD from a sandbox's environment (createSandbox)", () => {
  let dataDir: string;
  let box: Sandbox;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "ash-env-"));
    rmSync(marker, { force: true });
    box = await createSandbox({ dataDir, cgroup1Parent: cgroupParent, env: { LD_PRELOAD: "./p.so", ASH_PROBE: "it's $(here)" } });
  });
  afterAll(async () => {
    await box?.destroy();
    await sweepResourceGroups("cgroup1", [], { cgroup1Parent: cgroupParent });
    for (const mount of Object.values(cgroup1Mounts())) if (existsSync(join(mount!, cgroupParent))) rmdirSync(join(mount!, cgroupParent));
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("is loaded only by the sandboxed process, as the sandbox user, never by root outside", async () => {
    writeFileSync(join(box.workspaceDir, "p.so"), library);
    execFileSync("chown", [`${box.user!.uid}:${box.user!.gid}`, join(box.workspaceDir, "p.so")]);
    const r = await box.exec(`echo "$ASH_PROBE"; cat ${marker}`, { timeoutMs: 60_000 });
    expect(r.exitCode).toBe(0);
    // The variables still arrive, exactly.
    expect(r.stdout).toContain("it's $(here)\n");
    // The sandboxed processes loaded it as the sandbox user, into the sandbox's own /tmp...
    expect(r.stdout).toContain(`uid ${box.user!.uid}\n`);
    expect(r.stdout).not.toContain("uid 0\n");
    // ...and nothing ran it on the host.
    expect(existsSync(marker)).toBe(false);
  });
});

describe.skipIf(skip)("LD_PRELOAD in a session's extraEnv (the server's routes)", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    rmSync(marker, { force: true });
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_WARM_DEMAND_MS: "0" } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("envy") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  it("runs an uploaded library only inside the sandbox, as the sandbox user", async () => {
    const created = await server.api("/api/sessions", { method: "POST", json: { agent: "envy", extraEnv: { LD_PRELOAD: "./p.so" } } });
    expect(created.status).toBe(201);
    const { session } = await created.json();
    const upload = await server.api(`/api/sessions/${session.id}/files`, {
      method: "POST",
      json: { files: [{ path: "p.so", content: library.toString("base64") }] },
    });
    expect(upload.status).toBe(201);
    const exec = await server.api(`/api/sessions/${session.id}/exec`, { method: "POST", json: { command: `cat ${marker}` } });
    expect(exec.status).toBe(200);
    const result = await exec.json();
    expect(result.stdout).toMatch(/^uid [1-9]\d*\n/);
    expect(result.stdout).not.toContain("uid 0\n");
    expect(existsSync(marker)).toBe(false);
    await server.api(`/api/sessions/${session.id}`, { method: "DELETE" });
  });
});
