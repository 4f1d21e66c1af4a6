import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AgentFolderError, agentNameFromFolder, parseEnvFile, readAgentFolder } from "../../src/agents/local-folder";

let base: string;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), "ash-agent-folder-"));
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

async function put(rel: string, content: string | Buffer): Promise<void> {
  const path = join(base, rel);
  await mkdir(join(path, ".."), { recursive: true });
  await writeFile(path, content);
}

const decode = (content: string) => Buffer.from(content, "base64").toString("utf8");

describe("readAgentFolder", () => {
  it("reads every file with a relative path and base64 content, skipping node_modules and .git", async () => {
    await put("agent/CLAUDE.md", "You are a helpful agent.\n");
    await put("agent/.claude/settings.json", '{"model":"claude"}');
    await put("agent/.claude/skills/report/SKILL.md", "# Report");
    await put("agent/.mcp.json", "{}");
    await put("agent/data/prices.csv", "a,b\n1,2\n");
    await put("agent/data/blob.bin", Buffer.from([0, 255, 10, 13]));
    await put("agent/node_modules/left-pad/index.js", "module.exports = 1");
    await put("agent/tools/node_modules/x.js", "nested deps are skipped too");
    await put("agent/.git/HEAD", "ref: refs/heads/main");

    const folder = await readAgentFolder(join(base, "agent"));
    expect(folder.files.map((f) => f.path)).toEqual([
      ".claude/settings.json",
      ".claude/skills/report/SKILL.md",
      ".mcp.json",
      "CLAUDE.md",
      "data/blob.bin",
      "data/prices.csv",
    ]);
    const byPath = Object.fromEntries(folder.files.map((f) => [f.path, f.content]));
    expect(decode(byPath["CLAUDE.md"])).toBe("You are a helpful agent.\n");
    expect([...Buffer.from(byPath["data/blob.bin"], "base64")]).toEqual([0, 255, 10, 13]);
    expect(folder.env).toEqual({});
    expect(folder.totalBytes).toBe(25 + 18 + 8 + 2 + 4 + 8);
  });

  it("keeps whether a file is executable", async () => {
    await put("agent/CLAUDE.md", "x");
    await put("agent/bin/run.sh", "#!/bin/sh\necho hi\n");
    const { chmod } = await import("node:fs/promises");
    await chmod(join(base, "agent/bin/run.sh"), 0o755);
    await chmod(join(base, "agent/CLAUDE.md"), 0o644);
    const folder = await readAgentFolder(join(base, "agent"));
    const modes = Object.fromEntries(folder.files.map((f) => [f.path, f.mode]));
    expect(modes["bin/run.sh"]! & 0o111).not.toBe(0);
    expect(modes["CLAUDE.md"]! & 0o111).toBe(0);
  });

  it("reads top-level .env files as environment instead of uploading them, .env.local winning", async () => {
    await put("a/CLAUDE.md", "x");
    await put("a/.env", "API_URL=https://api.internal\nTOKEN=from-env\n");
    await put("a/.env.local", "TOKEN=from-local\n");
    await put("a/.env.production", "MODE=prod\nTOKEN=from-production\n");
    await put("a/.env.example", "TOKEN=put-yours-here\n");

    const folder = await readAgentFolder(join(base, "a"));
    expect(folder.files.map((f) => f.path)).toEqual([".env.example", "CLAUDE.md"]);
    expect(folder.envFiles).toEqual([".env", ".env.production", ".env.local"]);
    expect(folder.env).toEqual({ API_URL: "https://api.internal", TOKEN: "from-local", MODE: "prod" });
  });

  it("refuses a folder without CLAUDE.md, a missing folder and a file", async () => {
    await put("empty/notes.md", "no prompt here");
    await expect(readAgentFolder(join(base, "empty"))).rejects.toThrow(/has no CLAUDE\.md/);
    await expect(readAgentFolder(join(base, "nope"))).rejects.toThrow(/does not exist/);
    await expect(readAgentFolder(join(base, "empty/notes.md"))).rejects.toThrow(/is a file, and an agent is a folder/);
    await expect(readAgentFolder(join(base, "empty"))).rejects.toBeInstanceOf(AgentFolderError);
  });

  it("refuses a symlink that leaves the folder, naming it", async () => {
    await put("secret.txt", "outside");
    await put("agent/CLAUDE.md", "x");
    await symlink(join(base, "secret.txt"), join(base, "agent/link.txt"));
    await expect(readAgentFolder(join(base, "agent"))).rejects.toThrow(/link\.txt is a symlink to .*secret\.txt, outside the agent folder/);

    await rm(join(base, "agent/link.txt"));
    await mkdir(join(base, "agent/sub"));
    await symlink("../../", join(base, "agent/sub/up"));
    await expect(readAgentFolder(join(base, "agent"))).rejects.toThrow(/sub\/up is a symlink .* outside the agent folder/);
  });

  it("follows symlinks that stay inside, without looping, and refuses broken ones", async () => {
    await put("agent/CLAUDE.md", "x");
    await put("agent/docs/guide.md", "guide");
    await symlink("docs/guide.md", join(base, "agent/guide-link.md"));
    await symlink(".", join(base, "agent/self"));
    const folder = await readAgentFolder(join(base, "agent"));
    expect(folder.files.map((f) => f.path)).toEqual(["CLAUDE.md", "docs/guide.md", "guide-link.md"]);
    expect(decode(folder.files[2].content)).toBe("guide");

    await symlink("missing.md", join(base, "agent/broken.md"));
    await expect(readAgentFolder(join(base, "agent"))).rejects.toThrow(/broken\.md is a symlink to something that does not exist/);
  });
});

describe("parseEnvFile", () => {
  it("reads KEY=VALUE lines with comments, export, quotes and escapes", () => {
    const text = [
      "# a comment",
      "",
      "PLAIN=value",
      "export EXPORTED=yes",
      "SPACED = padded value  ",
      "INLINE=abc # trailing comment",
      "HASH=abc#not-a-comment",
      'DOUBLE="two words # not a comment"',
      'ESCAPES="line1\\nline2\\t\\"q\\""',
      "SINGLE='raw \\n stays'",
      'MULTI="first',
      'second"',
      "EMPTY=",
      "EQUALS=a=b=c",
      "CRLF=ok\r",
    ].join("\n");
    expect(parseEnvFile(text)).toEqual({
      PLAIN: "value",
      EXPORTED: "yes",
      SPACED: "padded value",
      INLINE: "abc",
      HASH: "abc#not-a-comment",
      DOUBLE: "two words # not a comment",
      ESCAPES: 'line1\nline2\t"q"',
      SINGLE: "raw \\n stays",
      MULTI: "first\nsecond",
      EMPTY: "",
      EQUALS: "a=b=c",
      CRLF: "ok",
    });
  });

  it("names the file and line of a malformed entry", () => {
    expect(() => parseEnvFile("GOOD=1\nno equals sign\n", ".env.local")).toThrow(".env.local line 2 is not KEY=VALUE.");
    expect(() => parseEnvFile("1BAD=x")).toThrow('.env line 1: "1BAD" is not a valid variable name.');
    expect(() => parseEnvFile('OPEN="never closed\nMORE=1')).toThrow(".env line 1: the value of OPEN has no closing \".");
    expect(() => parseEnvFile('Q="a" junk')).toThrow("unexpected text after the quoted value of Q");
  });
});

describe("agentNameFromFolder", () => {
  it("uses the folder name when it is a valid agent name", () => {
    expect(agentNameFromFolder("/srv/agents/support-bot")).toBe("support-bot");
    expect(agentNameFromFolder("/srv/agents/support-bot/")).toBe("support-bot");
    expect(agentNameFromFolder("/srv/agents/my agent")).toBeUndefined();
    expect(agentNameFromFolder("/srv/agents/" + "x".repeat(65))).toBeUndefined();
  });
});
