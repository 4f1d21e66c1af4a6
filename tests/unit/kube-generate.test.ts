import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { renderKubernetes } from "../../src/runspec";
import { ashInProcess } from "../helpers/cli";

// `ash kube generate` through the CLI's own boundary, in a fresh folder, with
// none of the caller's model or bucket keys in its environment unless a test sets them.
const CLEAN = { ANTHROPIC_API_KEY: undefined, AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined, GITHUB_TOKEN: undefined };
const ash = (cwd: string, args: string[], env: Record<string, string | undefined> = {}) => ashInProcess(args, { cwd, env: { HOME: cwd, ...CLEAN, ...env } });
const readSecret = async (dir: string, file = "ash-secret.json") => JSON.parse(await readFile(join(dir, file), "utf8"));

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "ash-kube-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("ash kube generate", () => {
  it("writes ash.yaml and a 0600 ash-secret.json with a fresh API key (shown once) and credential key (not shown)", async () => {
    const result = await ash(dir, ["kube", "generate", "--database", "cockroach"]);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.code).toBe(0);
    expect(await readFile(join(dir, "ash.yaml"), "utf8")).toBe(renderKubernetes({ database: "cockroach" }));
    const secret = await readSecret(dir);
    expect(secret).toMatchObject({ apiVersion: "v1", kind: "Secret", metadata: { name: "ash", namespace: "ash" }, type: "Opaque" });
    expect(Object.keys(secret.stringData)).toEqual(["ASH_API_KEY", "ASH_CREDENTIAL_KEY", "ASH_CLUSTER_SECRET"]);
    expect(secret.stringData.ASH_API_KEY).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(secret.stringData.ASH_CREDENTIAL_KEY).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // The servers' shared secret: at least 32 characters, and a different value from the other keys.
    expect(secret.stringData.ASH_CLUSTER_SECRET).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(new Set(Object.values(secret.stringData)).size).toBe(3);
    expect((await stat(join(dir, "ash-secret.json"))).mode & 0o777).toBe(0o600);
    expect(result.stdout).toContain(secret.stringData.ASH_API_KEY);
    expect(result.stdout + result.stderr).not.toContain(secret.stringData.ASH_CREDENTIAL_KEY);
    expect(result.stdout + result.stderr).not.toContain(secret.stringData.ASH_CLUSTER_SECRET);
    expect(result.stdout).toContain("ASH_CLUSTER_SECRET=(generated)");
    expect(result.stdout).toContain("kubectl apply -f ash.yaml -f ash-secret.json");
    // Without a model key it says where one goes.
    expect(result.stderr).toContain("No ANTHROPIC_API_KEY");
  });

  it("an external database and a bucket: the URL and the bucket's keys go into the Secret, never printed", async () => {
    const url = "postgresql://ash:db-password-123@db.internal:5432/ash";
    const env = { AWS_ACCESS_KEY_ID: "AKIA-test-id", AWS_SECRET_ACCESS_KEY: "bucket-secret-456", ANTHROPIC_API_KEY: "sk-ant-test-789" };
    const args = ["kube", "generate", "--database-url", url, "--snapshot-store", "s3://ash-sessions", "--replicas", "3", "-n", "agents", "-o", "prod.yaml"];
    const result = await ash(dir, args, env);
    expect(result.code).toBe(0);
    expect(await readFile(join(dir, "prod.yaml"), "utf8")).toBe(renderKubernetes({ databaseUrl: url, snapshotStore: "s3://ash-sessions", replicas: 3, namespace: "agents" }));
    const secret = await readSecret(dir);
    expect(secret.metadata.namespace).toBe("agents");
    expect(secret.stringData).toMatchObject({ ASH_DATABASE_URL: url, ...env });
    for (const value of [url, ...Object.values(env)]) expect(result.stdout + result.stderr).not.toContain(value);
    expect(await readFile(join(dir, "prod.yaml"), "utf8")).not.toContain("db-password-123");
    expect(result.stdout).toContain("Added to ash-secret.json: AWS_ACCESS_KEY_ID (from your environment)");
  });

  it("a rerun keeps every key in the Secret file, adds what is missing, and says so", async () => {
    expect((await ash(dir, ["kube", "generate", "--database", "cockroach"])).code).toBe(0);
    const before = await readSecret(dir);
    before.stringData.ANTHROPIC_API_KEY = "sk-ant-added-by-hand";
    await writeFile(join(dir, "ash-secret.json"), JSON.stringify(before));
    const result = await ash(dir, ["kube", "generate", "--database", "postgres", "--force"], { ANTHROPIC_API_KEY: "sk-ant-other" });
    expect(result.code).toBe(0);
    const after = await readSecret(dir);
    expect(after.stringData).toEqual({ ...before.stringData, POSTGRES_PASSWORD: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) });
    expect(result.stdout).toContain("Kept ASH_API_KEY, ASH_CREDENTIAL_KEY, ASH_CLUSTER_SECRET, ANTHROPIC_API_KEY already in ash-secret.json");
    expect(result.stdout).toContain("Added to ash-secret.json: POSTGRES_PASSWORD=(generated)");
    expect(result.stdout + result.stderr).not.toContain(before.stringData.ASH_API_KEY);
  });

  it("adds ASH_CLUSTER_SECRET to a Secret file written before servers shared one, keeping the rest and printing none of it", async () => {
    const old = { apiVersion: "v1", kind: "Secret", metadata: { name: "ash", namespace: "ash" }, type: "Opaque", stringData: { ASH_API_KEY: "old-api-key-0123456789", ASH_CREDENTIAL_KEY: "old-credential-key-0123456789" } };
    await writeFile(join(dir, "ash-secret.json"), JSON.stringify(old), { mode: 0o600 });
    const result = await ash(dir, ["kube", "generate", "--database", "cockroach"]);
    expect(result.code).toBe(0);
    const after = await readSecret(dir);
    expect(after.stringData).toEqual({ ...old.stringData, ASH_CLUSTER_SECRET: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) });
    expect(result.stdout).toContain("Added to ash-secret.json: ASH_CLUSTER_SECRET=(generated)");
    for (const value of Object.values(after.stringData) as string[]) expect(result.stdout + result.stderr).not.toContain(value);
    // A second rerun keeps the one it made.
    expect((await ash(dir, ["kube", "generate", "--database", "cockroach", "--force"])).code).toBe(0);
    expect((await readSecret(dir)).stringData.ASH_CLUSTER_SECRET).toBe(after.stringData.ASH_CLUSTER_SECRET);
  });

  it("refuses to overwrite the manifests without --force and changes nothing", async () => {
    await writeFile(join(dir, "ash.yaml"), "kind: Mine\n");
    const result = await ash(dir, ["kube", "generate", "--database", "postgres"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("ash.yaml already exists; nothing was written. Add --force");
    expect(await readdir(dir)).toEqual(["ash.yaml"]);
    expect(await readFile(join(dir, "ash.yaml"), "utf8")).toBe("kind: Mine\n");
  });

  it("refuses a Secret file it did not write, and writes nothing", async () => {
    await writeFile(join(dir, "ash-secret.json"), "apiVersion: v1\nkind: Secret\n");
    const result = await ash(dir, ["kube", "generate", "--database", "postgres"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("is not the JSON Secret this command writes");
    expect(await readdir(dir)).toEqual(["ash-secret.json"]);
  });

  it("needs the bucket's keys in the environment (or the Secret file) for a bucket, and writes nothing without them", async () => {
    const result = await ash(dir, ["kube", "generate", "--database", "postgres", "--snapshot-store", "s3://ash-sessions"], { AWS_ACCESS_KEY_ID: "only-the-id" });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("Not set in your environment: AWS_SECRET_ACCESS_KEY (the bucket's credentials)");
    expect(await readdir(dir)).toEqual([]);
  });

  it.each([
    [[], "Say which database"],
    [["--database", "mysql"], "--database must be one of cockroach, postgres"],
    [["--database", "postgres", "--database-url", "postgresql://db/ash"], "not both"],
    [["--database", "postgres", "--replicas", "2"], "--replicas above 1 needs --snapshot-store"],
    [["--database", "postgres", "--replicas", "two"], "--replicas must be a whole number"],
    [["--database", "postgres", "--namespace", "-bad"], "--namespace must be a Kubernetes name"],
    [["--database", "postgres", "--memory", "4GB"], "--memory must be a Kubernetes quantity"],
    [["--database", "postgres", "-e", "ASH_API_KEY=abcdefgh"], "would put a secret in the ConfigMap"],
    [["--database", "postgres", "-e", "ASH_ADVERTISE_URL=http://10.0.0.1:4100"], "the Deployment sets it for every pod"],
    [["--database", "postgres", "-e", "GITHUB_TOKEN"], "Not set in your environment: GITHUB_TOKEN (-e GITHUB_TOKEN)"],
    [["--database", "postgres", "--replica", "2"], "Unknown option --replica"],
  ])("refuses %j with exit code 2 and writes nothing", async (args, message) => {
    const result = await ash(dir, ["kube", "generate", ...args]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
    expect(await readdir(dir)).toEqual([]);
  });

  it("says so when the output folder does not exist", async () => {
    const result = await ash(dir, ["kube", "generate", "--database", "postgres", "-o", "missing/ash.yaml"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("does not exist; create it first");
    await mkdir(join(dir, "missing"));
    expect((await ash(dir, ["kube", "generate", "--database", "postgres", "-o", "missing/ash.yaml"])).code).toBe(0);
    expect((await readSecret(join(dir, "missing"))).stringData.POSTGRES_PASSWORD).toBeTruthy();
  });

  it("is listed in ash --help and explains its options", async () => {
    expect((await ash(dir, ["--help"])).stdout).toContain("kube");
    const help = await ash(dir, ["kube", "generate", "--help"]);
    expect(help.code).toBe(0);
    for (const flag of ["--database-url", "--database", "--snapshot-store", "--replicas", "--namespace", "--force"]) expect(help.stdout).toContain(flag);
  });
});
