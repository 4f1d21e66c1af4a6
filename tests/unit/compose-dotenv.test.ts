import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ensureDotEnvSecrets, generateSecret, parseDotEnv } from "../../src/runspec";

let dir: string;
let path: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "ash-dotenv-"));
  path = join(dir, ".env");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("generateSecret", () => {
  it("is 32 random bytes in base64url: 43 URL-safe characters, different every time", () => {
    const keys = new Set(Array.from({ length: 50 }, generateSecret));
    expect(keys.size).toBe(50);
    for (const key of keys) expect(key).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });
});

describe("ensureDotEnvSecrets", () => {
  it("creates .env with mode 0600, a header and a fresh key", async () => {
    const result = await ensureDotEnvSecrets(path, ["ASH_API_KEY"], ["Secrets."]);
    expect(result.createdFile).toBe(true);
    expect(result.kept).toEqual([]);
    const text = await readFile(path, "utf8");
    expect(text).toBe(`# Secrets.\nASH_API_KEY=${result.generated.ASH_API_KEY}\n`);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it("never replaces a key that is there, and does not touch the file", async () => {
    const original = "# mine\nexport ASH_API_KEY='my-existing-key'\nOTHER=1\n";
    await writeFile(path, original, { mode: 0o640 });
    const result = await ensureDotEnvSecrets(path, ["ASH_API_KEY"]);
    expect(result).toEqual({ createdFile: false, generated: {}, kept: ["ASH_API_KEY"] });
    expect(await readFile(path, "utf8")).toBe(original);
    expect((await stat(path)).mode & 0o777).toBe(0o640);
  });

  it("adds only the missing names to an existing file, keeping its lines", async () => {
    await writeFile(path, "ASH_API_KEY=keep-me\nANTHROPIC_API_KEY=sk-ant\n");
    const result = await ensureDotEnvSecrets(path, ["ASH_API_KEY", "POSTGRES_PASSWORD"]);
    expect(result.kept).toEqual(["ASH_API_KEY"]);
    expect(Object.keys(result.generated)).toEqual(["POSTGRES_PASSWORD"]);
    expect(await readFile(path, "utf8")).toBe(`ASH_API_KEY=keep-me\nANTHROPIC_API_KEY=sk-ant\nPOSTGRES_PASSWORD=${result.generated.POSTGRES_PASSWORD}\n`);
  });

  it("fills an empty assignment where it stands", async () => {
    await writeFile(path, "A=1\nASH_API_KEY=\nB=2");
    const result = await ensureDotEnvSecrets(path, ["ASH_API_KEY"]);
    expect(await readFile(path, "utf8")).toBe(`A=1\nASH_API_KEY=${result.generated.ASH_API_KEY}\nB=2\n`);
  });

  it("gives the same answer when run again: the key stays", async () => {
    const first = await ensureDotEnvSecrets(path, ["ASH_API_KEY"]);
    const second = await ensureDotEnvSecrets(path, ["ASH_API_KEY"]);
    expect(second.generated).toEqual({});
    expect(parseDotEnv(await readFile(path, "utf8")).ASH_API_KEY).toBe(first.generated.ASH_API_KEY);
  });
});

describe("parseDotEnv", () => {
  it("reads the assignments Compose reads, the last one winning", () => {
    const text = ["# comment", "", "A=1", "export B = two ", "C='quoted # not a comment'", 'D="dq"', "E=plain # trailing", "A=again", "not an assignment"].join("\n");
    expect(parseDotEnv(text)).toEqual({ A: "again", B: "two", C: "quoted # not a comment", D: "dq", E: "plain" });
  });
});
