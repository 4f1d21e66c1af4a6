import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseDotEnv, renderCompose } from "../../src/runspec";

import { ashInProcess } from "../helpers/cli";

// `ash compose generate` through the CLI's own boundary, in a fresh folder.
const ash = (cwd: string, ...args: string[]) => ashInProcess(args, { cwd, env: { HOME: cwd } });

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "ash-compose-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("ash compose generate", () => {
  it("writes docker-compose.yml for CockroachDB and a 0600 .env with a fresh API key, shown once", async () => {
    const result = await ash(dir, "compose", "generate");
    expect(result.code).toBe(0);
    expect(await readFile(join(dir, "docker-compose.yml"), "utf8")).toBe(renderCompose({ database: "cockroach" }));
    const env = parseDotEnv(await readFile(join(dir, ".env"), "utf8"));
    expect(env.ASH_API_KEY).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await stat(join(dir, ".env"))).mode & 0o777).toBe(0o600);
    expect(result.stdout).toContain(env.ASH_API_KEY);
  });

  it("writes the PostgreSQL variant with its options to --output, and a generated database password it does not print", async () => {
    const result = await ash(dir, "compose", "generate", "--database", "postgres", "--output", "prod.yml", "--port", "8080", "--max-sandboxes", "20", "-e", "A=1", "-e", "B");
    expect(result.code).toBe(0);
    expect(await readFile(join(dir, "prod.yml"), "utf8")).toBe(
      renderCompose({ database: "postgres", port: 8080, maxSandboxes: 20, env: [{ key: "A", value: "1" }, { key: "B" }] }),
    );
    const env = parseDotEnv(await readFile(join(dir, ".env"), "utf8"));
    expect(env.POSTGRES_PASSWORD).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(result.stdout + result.stderr).not.toContain(env.POSTGRES_PASSWORD);
    expect(result.stdout).toContain("docker compose -f prod.yml up -d");
  });

  it("refuses to overwrite an existing file without --force and changes nothing", async () => {
    await writeFile(join(dir, "docker-compose.yml"), "services: {}\n");
    const result = await ash(dir, "compose", "generate");
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("docker-compose.yml already exists; nothing was written. Add --force to replace it");
    expect(await readFile(join(dir, "docker-compose.yml"), "utf8")).toBe("services: {}\n");
    expect(await readdir(dir)).toEqual(["docker-compose.yml"]);
  });

  it("with --force replaces the file but never the key in .env, and never prints that key", async () => {
    await writeFile(join(dir, "docker-compose.yml"), "services: {}\n");
    await writeFile(join(dir, ".env"), "ASH_API_KEY=the-key-already-here\n");
    const result = await ash(dir, "compose", "generate", "--force", "--port", "9090");
    expect(result.code).toBe(0);
    expect(await readFile(join(dir, "docker-compose.yml"), "utf8")).toContain('"9090:4100"');
    expect(await readFile(join(dir, ".env"), "utf8")).toBe("ASH_API_KEY=the-key-already-here\n");
    expect(result.stdout + result.stderr).not.toContain("the-key-already-here");
    expect(result.stdout).toContain("Kept ASH_API_KEY already in .env");
  });

  it.each([
    [["--database", "mysql"], "--database must be one of cockroach, postgres"],
    [["--port", "0"], "--port must be a port number from 1 to 65535"],
    [["--idle-timeout", "soon"], "--idle-timeout must be a whole number greater than 0"],
    [["-e", "1X=y"], "expected KEY=VALUE"],
    [["--prot", "8080"], "Unknown option --prot"],
    [["--max-sandboxes", "5", "-e", "ASH_MAX_SANDBOXES=6"], "--max-sandboxes and -e ASH_MAX_SANDBOXES disagree"],
  ])("refuses %j with exit code 2 and writes nothing", async (args, message) => {
    const result = await ash(dir, "compose", "generate", ...args);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
    expect(await readdir(dir)).toEqual([]);
  });

  it("says so when the output folder does not exist", async () => {
    const result = await ash(dir, "compose", "generate", "-o", "missing/compose.yml");
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("does not exist; create it first");
    await mkdir(join(dir, "missing"));
    expect((await ash(dir, "compose", "generate", "-o", "missing/compose.yml")).code).toBe(0);
    expect(parseDotEnv(await readFile(join(dir, "missing/.env"), "utf8")).ASH_API_KEY).toBeTruthy();
  });
});
