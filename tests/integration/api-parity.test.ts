import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdir, mkdtemp, readFile, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AshClient } from "../../src/client";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { backends } from "../helpers/backends";
import { removeTree } from "../../src/sandbox/remove-tree";

/**
 * The agent, file and version routes of the original server's API, through plain HTTP with the
 * request and answer shapes it documents, and through the typed client.
 */

const b64 = (content: string | Buffer) => Buffer.from(content).toString("base64");

describe.each(backends)("agents as the original API has them, on $name", (backend) => {
  let server: TestServer;
  let cleanup: () => Promise<void>;
  let roots: string;

  beforeAll(async () => {
    const prepared = await backend.prepare();
    cleanup = prepared.cleanup;
    roots = await mkdtemp(join(tmpdir(), "ash-roots-"));
    server = await startTestServer({ env: { ...prepared.env, ASH_AGENT_ROOTS: join(roots, "allowed") } });
  });
  afterAll(async () => {
    await server?.dispose();
    await cleanup?.();
    if (roots) await removeTree(roots);
  });

  it("deploys an agent from a systemPrompt alone: its CLAUDE.md is the prompt", async () => {
    const r = await server.api("/api/agents", { method: "POST", json: { name: "managed", systemPrompt: "You answer in haiku." } });
    expect(r.status).toBe(201);
    const { agent } = await r.json();
    expect(agent).toMatchObject({ name: "managed", version: 1, systemPrompt: "You answer in haiku.", managed: true });
    expect(await readFile(join(server.dataDir, "agents/managed/CLAUDE.md"), "utf8")).toBe("You answer in haiku.");
    const files = await (await server.api("/api/agents/managed/files")).json();
    expect(files.files).toEqual([{ path: "CLAUDE.md", size: 20, mode: 0o644, modifiedAt: expect.any(String) }]);
    const one = await (await server.api("/api/agents/managed/files/CLAUDE.md")).json();
    expect(one).toMatchObject({ path: "CLAUDE.md", content: "You answer in haiku.", size: 20 });

    // Changing the prompt rewrites CLAUDE.md in a new version.
    const patched = await server.api("/api/agents/managed", { method: "PATCH", json: { systemPrompt: "You answer in limericks." } });
    expect(patched.status).toBe(200);
    expect((await patched.json()).agent).toMatchObject({ version: 2, systemPrompt: "You answer in limericks." });
    const raw = await server.api("/api/agents/managed/files/CLAUDE.md?format=raw");
    expect(raw.headers.get("content-type")).toMatch(/^text\/markdown/);
    expect(await raw.text()).toBe("You answer in limericks.");

    const neither = await server.api("/api/agents", { method: "POST", json: { name: "nothing" } });
    expect(neither.status).toBe(400);
    expect((await neither.json()).error).toMatch(/systemPrompt/);
  });

  it("PATCH makes a new version with changed prompt, env, settings and files", async () => {
    await server.api("/api/agents", { method: "POST", json: agentUpload("patchy", { "data/a.txt": "a" }, { env: { KEEP: "1", DROP: "2" } }) });
    const r = await server.api("/api/agents/patchy", {
      method: "PATCH",
      json: { systemPrompt: "Extra rules.", env: { DROP: null, ADD: "3" }, maxTokens: 5000, egress: ["example.com"], files: [{ path: "data/b.txt", content: b64("b") }], removeFiles: ["data/a.txt"] },
    });
    expect(r.status).toBe(200);
    const { agent } = await r.json();
    expect(agent).toMatchObject({ version: 2, systemPrompt: "Extra rules.", env: { KEEP: "***", ADD: "***" }, maxTokens: 5000, egress: ["example.com"], managed: false });
    expect(agent.env.DROP).toBeUndefined();
    const listing = (await (await server.api("/api/agents/patchy/files")).json()).files.map((f: any) => f.path);
    expect(listing).toEqual(["CLAUDE.md", "data/b.txt"]);
    // Version 1 is still there as it was.
    const old = (await (await server.api("/api/agents/patchy/files?version=1")).json()).files.map((f: any) => f.path);
    expect(old).toEqual(["CLAUDE.md", "data/a.txt"]);

    for (const [body, status, message] of [
      [{}, 400, /Nothing to change/],
      [{ removeFiles: ["CLAUDE.md"] }, 422, /CLAUDE\.md/],
      [{ files: [{ path: "../x", content: "" }] }, 400, /\.\./],
      [{ files: [{ path: "data/b.txt/c", content: "" }] }, 400, /folder/],
      [{ colour: "red" }, 400, /Unknown field/],
    ] as const) {
      const bad = await server.api("/api/agents/patchy", { method: "PATCH", json: body });
      expect(bad.status, JSON.stringify(body)).toBe(status);
      expect((await bad.json()).error).toMatch(message);
    }
    expect((await (await server.api("/api/agents/patchy")).json()).agent.version).toBe(2);
    expect((await server.api("/api/agents/nobody", { method: "PATCH", json: { systemPrompt: "x" } })).status).toBe(404);
  });

  it("POST /files adds and replaces files as a new version, with the deploy's path checks", async () => {
    await server.api("/api/agents", { method: "POST", json: agentUpload("filer", { "notes.txt": "one" }) });
    const r = await server.api("/api/agents/filer/files", { method: "POST", json: { files: [{ path: "notes.txt", content: b64("two") }, { path: "bin/run.sh", content: b64("#!/bin/sh\n"), mode: 0o755 }] } });
    expect(r.status).toBe(201);
    expect((await r.json()).agent.version).toBe(2);
    expect((await (await server.api("/api/agents/filer/files/notes.txt")).json()).content).toBe("two");
    expect(await readFile(join(server.dataDir, "agents/filer/notes.txt"), "utf8")).toBe("two");
    const bin = (await (await server.api("/api/agents/filer/files")).json()).files.find((f: any) => f.path === "bin/run.sh");
    expect(bin.mode).toBe(0o755);
    for (const path of ["../../etc/passwd", "/etc/passwd", "a/../../b", "x\u0001y"]) {
      const bad = await server.api("/api/agents/filer/files", { method: "POST", json: { files: [{ path, content: b64("x") }] } });
      expect(bad.status, path).toBe(400);
    }
    expect((await server.api("/api/agents/filer/files/nope.txt")).status).toBe(404);
    expect((await server.api("/api/agents/filer/files/..%2F..%2Fetc%2Fpasswd")).status).toBe(400);
    expect((await (await server.api("/api/agents/filer")).json()).agent.version).toBe(2);
  });

  it("lists, creates, reads and activates versions; new sessions get the active one", async () => {
    await server.api("/api/agents", { method: "POST", json: agentUpload("versioned", {}, { systemPrompt: "first" }) });
    await server.api("/api/agents", { method: "POST", json: agentUpload("versioned", {}, { systemPrompt: "second" }) });
    const created = await server.api("/api/agents/versioned/versions", { method: "POST", json: { systemPrompt: "third", name: "candidate", releaseNotes: "tries a new prompt" } });
    expect(created.status).toBe(201);
    const { version } = await created.json();
    expect(version).toMatchObject({ agentName: "versioned", versionNumber: 3, name: "candidate", isActive: false, systemPrompt: "third", releaseNotes: "tries a new prompt" });
    // Not active until activated.
    expect((await (await server.api("/api/agents/versioned")).json()).agent).toMatchObject({ version: 2, systemPrompt: "second" });

    const list = await (await server.api("/api/agents/versioned/versions")).json();
    expect(list.versions.map((v: any) => [v.versionNumber, v.isActive])).toEqual([[1, false], [2, true], [3, false]]);
    expect((await (await server.api("/api/agents/versioned/versions/1")).json()).version.systemPrompt).toBe("first");
    expect((await server.api("/api/agents/versioned/versions/9")).status).toBe(404);
    expect((await server.api("/api/agents/versioned/versions/x")).status).toBe(400);

    const act = await server.api("/api/agents/versioned/versions/1/activate", { method: "POST" });
    expect(act.status).toBe(200);
    expect(await act.json()).toMatchObject({ activated: true, versionNumber: 1, agent: { version: 1, systemPrompt: "first" } });
    // A deploy after activating an old version takes the next free number, not one in use.
    const next = await (await server.api("/api/agents", { method: "POST", json: agentUpload("versioned", {}, { systemPrompt: "fourth" }) })).json();
    expect(next.agent.version).toBe(4);
    const cloned = await (await server.api("/api/agents/versioned/versions", { method: "POST", json: { cloneFrom: 1, activate: true } })).json();
    expect(cloned.version).toMatchObject({ versionNumber: 5, isActive: true, systemPrompt: "first" });
    expect((await server.api("/api/agents/versioned/versions", { method: "POST", json: { cloneFrom: 42 } })).status).toBe(400);
  });

  it("keeps warmSpares and budgets in the agent's config", async () => {
    await server.api("/api/agents", { method: "POST", json: agentUpload("configured") });
    expect((await (await server.api("/api/agents/configured/config")).json()).config).toEqual({ warmSpares: 0, maxTokens: null, egress: [], version: 1 });
    const r = await server.api("/api/agents/configured/config", { method: "PATCH", json: { warmSpares: 2 } });
    expect((await r.json()).config).toMatchObject({ warmSpares: 2, version: 1 });
    const budget = await (await server.api("/api/agents/configured/config", { method: "PATCH", json: { maxTokens: 1000 } })).json();
    expect(budget.config).toEqual({ warmSpares: 2, maxTokens: 1000, egress: [], version: 2 });
    expect((await (await server.api("/api/agents/configured")).json()).agent).toMatchObject({ warmSpares: 2, maxTokens: 1000 });
    expect((await server.api("/api/agents/configured/config", { method: "PATCH", json: { warmSpares: -1 } })).status).toBe(400);
    expect((await server.api("/api/agents/configured/config", { method: "PATCH", json: { warmSpares: null } })).status).toBe(200);
    expect((await (await server.api("/api/agents/configured/config")).json()).config.warmSpares).toBe(0);
  });

  it("deploys by path from an operator's agent root, never through a symlink out", async () => {
    const allowed = join(roots, "allowed");
    const outside = join(roots, "outside");
    await mkdir(join(allowed, "bot"), { recursive: true });
    await mkdir(outside, { recursive: true });
    await writeFile(join(allowed, "bot/CLAUDE.md"), "from a root");
    await writeFile(join(outside, "CLAUDE.md"), "outside");
    await symlink(outside, join(allowed, "sneaky"));
    const ok = await server.api("/api/agents", { method: "POST", json: { name: "rooted", path: join(allowed, "bot") } });
    expect(ok.status).toBe(201);
    expect((await (await server.api("/api/agents/rooted/files/CLAUDE.md")).json()).content).toBe("from a root");
    for (const path of [outside, join(allowed, "sneaky"), join(allowed, "bot/../../outside"), "/etc"]) {
      const bad = await server.api("/api/agents", { method: "POST", json: { name: "escaped", path } });
      expect(bad.status, path).toBe(400);
      const { error } = await bad.json();
      expect(error).toMatch(/ASH_AGENT_ROOTS/);
      expect(error).not.toContain(roots);
    }
    expect((await server.api("/api/agents/escaped")).status).toBe(404);
  });

  it("answers the typed client's agent methods", async () => {
    const client = new AshClient({ url: server.url, apiKey: server.apiKey });
    const agent = await client.deployAgent({ name: "typed-managed", systemPrompt: "Be terse." });
    expect(agent.version).toBe(1);
    expect((await client.updateAgent("typed-managed", { systemPrompt: "Be verbose." })).version).toBe(2);
    expect((await client.listAgentFiles("typed-managed")).map((f) => f.path)).toEqual(["CLAUDE.md"]);
    expect((await client.readAgentFile("typed-managed", "CLAUDE.md")).text()).toBe("Be verbose.");
    expect((await client.addAgentFiles("typed-managed", [{ path: "data/x.txt", content: b64("x") }])).version).toBe(3);
    const v = await client.createAgentVersion("typed-managed", { systemPrompt: "Be kind." });
    expect(v).toMatchObject({ versionNumber: 4, isActive: false });
    expect((await client.listAgentVersions("typed-managed")).length).toBe(4);
    expect((await client.getAgentVersion("typed-managed", 1)).systemPrompt).toBe("Be terse.");
    expect((await client.activateAgentVersion("typed-managed", 4)).version).toBe(4);
    expect((await client.updateAgentConfig("typed-managed", { warmSpares: 1 })).warmSpares).toBe(1);
    expect((await client.getAgentConfig("typed-managed")).warmSpares).toBe(1);
  });
});
