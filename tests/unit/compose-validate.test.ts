import { execFile, execFileSync } from "node:child_process";
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { skipUnlessReady } from "../helpers/requirements";

// The reference files must pass `docker-compose config` (the standalone 1.29 tool,
// the oldest Compose this project supports), with and without their secrets.
const root = join(import.meta.dirname, "../..");

const compose = (() => {
  try {
    return execFileSync("docker-compose", ["version", "--short"]).toString().trim();
  } catch {
    return undefined;
  }
})();

function config(cwd: string, file: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(ASH_|POSTGRES_|ANTHROPIC_|COMPOSE_)/.test(k)));
  return new Promise((resolve) => {
    execFile("docker-compose", ["-f", file, "config"], { cwd, env: { ...clean, ...env }, timeout: 60_000 }, (error: any, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

const composeSkip = skipUnlessReady("docker-compose config", compose ? undefined : "docker-compose is not installed (infra/host-packages.sh test installs it)");

describe.skipIf(composeSkip)(`docker-compose ${compose ?? "(not installed)"} config`, () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ash-compose-config-"));
    for (const database of ["cockroach", "postgres"]) {
      await copyFile(join(root, "compose", `docker-compose.${database}.yml`), join(dir, `${database}.yml`));
    }
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each(["cockroach", "postgres"])("accepts docker-compose.%s.yml with its .env and keeps every isolation option", async (database) => {
    await writeFile(join(dir, ".env"), "ASH_API_KEY=a-test-key-of-enough-length\nPOSTGRES_PASSWORD=pw\nANTHROPIC_API_KEY=sk-ant-x\n");
    const result = await config(dir, `${database}.yml`);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const out = result.stdout;
    expect(out).toContain("init: true");
    expect(out).toMatch(/cap_add:\n\s+- SYS_ADMIN/);
    expect(out).toContain("seccomp=unconfined");
    expect(out).toContain("apparmor=unconfined");
    expect(out).toContain("/sys/fs/cgroup:/sys/fs/cgroup:rw");
    expect(out).toContain("ASH_API_KEY: a-test-key-of-enough-length");
    expect(out).toContain("condition: service_healthy");
    expect(out).not.toContain("privileged");
    if (database === "postgres") expect(out).toContain("ASH_DATABASE_URL: postgresql://ash:pw@postgres:5432/ash");
    else expect(out).toContain("condition: service_completed_successfully");
  });

  it.each(["cockroach", "postgres"])("refuses docker-compose.%s.yml without ASH_API_KEY, saying where to set it", async (database) => {
    await writeFile(join(dir, ".env"), "POSTGRES_PASSWORD=pw\n");
    const result = await config(dir, `${database}.yml`);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("set ASH_API_KEY in .env");
  });

  it("refuses the PostgreSQL file without POSTGRES_PASSWORD", async () => {
    await writeFile(join(dir, ".env"), "ASH_API_KEY=a-test-key-of-enough-length\n");
    const result = await config(dir, "postgres.yml");
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("set POSTGRES_PASSWORD in .env");
  });
});
