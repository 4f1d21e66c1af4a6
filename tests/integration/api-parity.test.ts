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
    expect(agent).toMatchObject({ name: "managed", version: 1, systemPrompt: "You answer in haiku.", managed: true, path: "agents/managed" });
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

describe("session files, uploads and reads", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let client: AshClient;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_MAX_FILE_BYTES: "200000" } });
    client = new AshClient({ url: server.url, apiKey: server.apiKey });
    await server.api("/api/agents", { method: "POST", json: agentUpload("files-agent", { "data/hello.txt": "héllo\n" }) });
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const newSession = async () => (await (await server.api("/api/sessions", { method: "POST", json: { agent: "files-agent" } })).json()).session as { id: string };
  const exec = async (id: string, command: string) => (await server.api(`/api/sessions/${id}/exec`, { method: "POST", json: { command } })).json();

  it("serves a file's raw bytes by default, JSON with ?format=json, and says where the answer came from", async () => {
    const { id } = await newSession();
    const raw = await server.api(`/api/sessions/${id}/files/data/hello.txt`);
    expect(raw.status).toBe(200);
    expect(raw.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    expect(raw.headers.get("x-content-type-options")).toBe("nosniff");
    expect(raw.headers.get("content-disposition")).toBe(`attachment; filename="hello.txt"; filename*=UTF-8''hello.txt`);
    expect(raw.headers.get("x-ash-source")).toBe("sandbox");
    expect(await raw.text()).toBe("héllo\n");
    const asJson = await (await server.api(`/api/sessions/${id}/files/data/hello.txt?format=json`)).json();
    expect(asJson).toEqual({ path: "data/hello.txt", size: 7, encoding: "utf8", content: "héllo\n", source: "sandbox" });
    expect((await (await server.api(`/api/sessions/${id}/files`)).json()).source).toBe("sandbox");
    expect((await (await server.api(`/api/sessions/${id}/logs`)).json()).source).toBe("sandbox");

    // A page a browser would run is served as bytes to download, with a name it cannot break out of.
    await exec(id, `printf '<script>alert(1)</script>' > 'page "x".html'; head -c 300000 /dev/zero > big.bin`);
    const html = await server.api(`/api/sessions/${id}/files/${encodeURIComponent('page "x".html')}`);
    expect(html.headers.get("content-type")).toBe("application/octet-stream");
    expect(html.headers.get("content-disposition")).toBe(`attachment; filename="page _x_.html"; filename*=UTF-8''page%20%22x%22.html`);
    const big = await server.api(`/api/sessions/${id}/files/big.bin`);
    expect(big.status).toBe(413);
    expect((await big.json()).error).toMatch(/300000 bytes.*ASH_MAX_FILE_BYTES/);

    await server.api(`/api/sessions/${id}/pause`, { method: "POST" });
    const asleep = await server.api(`/api/sessions/${id}/files/data/hello.txt`);
    expect(asleep.headers.get("x-ash-source")).toBe("snapshot");
    expect(await asleep.text()).toBe("héllo\n");
    expect((await (await server.api(`/api/sessions/${id}/files`)).json()).source).toBe("snapshot");
    expect((await server.api(`/api/sessions/${id}/files/big.bin`)).status).toBe(413);
    // Our client and CLI read either form.
    expect((await client.readFile(id, "data/hello.txt")).text()).toBe("héllo\n");
  });

  it("writes a batch of files as the sandbox user, waking a sleeping session, and deletes them", async () => {
    const { id } = await newSession();
    await server.api(`/api/sessions/${id}/pause`, { method: "POST" });
    const r = await server.api(`/api/sessions/${id}/files`, {
      method: "POST",
      json: { targetPath: "inbox", files: [{ path: "a.txt", content: "plain text", encoding: "utf8" }, { path: "sub/run.sh", content: b64("#!/bin/sh\necho ran\n"), mode: 0o755 }] },
    });
    expect(r.status).toBe(201);
    expect(await r.json()).toEqual({ files: [{ path: "inbox/a.txt", size: 10 }, { path: "inbox/sub/run.sh", size: 19 }], targetPath: "inbox" });
    expect((await (await server.api(`/api/sessions/${id}`)).json()).session.status).toBe("active");
    const owners = await exec(id, "id -u; stat -c %u inbox/a.txt inbox/sub/run.sh inbox; ./inbox/sub/run.sh");
    const [me, ...rest] = owners.stdout.trim().split("\n");
    expect(rest).toEqual([me, me, me, "ran"]);

    // Replacing a symlink the agent planted writes the file in its place and never follows it.
    await exec(id, "ln -s /etc/hostname inbox/link.txt");
    expect((await server.api(`/api/sessions/${id}/files`, { method: "POST", json: { files: [{ path: "inbox/link.txt", content: "mine", encoding: "utf8" }] } })).status).toBe(201);
    expect((await exec(id, "test -L inbox/link.txt && echo link || cat inbox/link.txt")).stdout).toBe("mine");

    for (const [body, status] of [
      [{ files: [{ path: "../x", content: "" }] }, 400],
      [{ files: [{ path: "/etc/x", content: "" }] }, 400],
      [{ targetPath: "../up", files: [{ path: "x", content: "" }] }, 400],
      [{ files: [{ path: "x", content: "%%%" }] }, 400],
      [{ files: [{ path: "inbox/a.txt/deeper", content: "" }] }, 409],
      [{ files: [] }, 400],
    ] as const) {
      const bad = await server.api(`/api/sessions/${id}/files`, { method: "POST", json: body });
      expect(bad.status, JSON.stringify(body)).toBe(status);
    }

    const del = await server.api(`/api/sessions/${id}/files/inbox/sub`, { method: "DELETE" });
    expect(del.status).toBe(200);
    expect(await del.json()).toEqual({ path: "inbox/sub", deleted: true });
    expect((await server.api(`/api/sessions/${id}/files/inbox/sub`, { method: "DELETE" })).status).toBe(404);
    expect((await server.api(`/api/sessions/${id}/files/..%2F..%2Fetc`, { method: "DELETE" })).status).toBe(400);
    expect((await exec(id, "ls inbox")).stdout).toBe("a.txt\nlink.txt\n");
  });

  it("unpacks an uploaded tar.gz into the workspace as the sandbox user", async () => {
    const { tarGzOf } = await import("../helpers/tar-build");
    const { id } = await newSession();
    const archive = tarGzOf([
      { name: "project/", type: "dir" },
      { name: "project/readme.md", content: "# hi\n" },
      { name: "project/bin/tool", content: "#!/bin/sh\necho tool\n", mode: 0o755 },
      { name: "project/docs", type: "symlink", linkname: "readme.md" },
      { name: "project/copy.md", type: "hardlink", linkname: "project/readme.md" },
    ]);
    const r = await server.api(`/api/sessions/${id}/workspace?targetPath=up`, { method: "POST", body: archive, headers: { "content-type": "application/gzip" } });
    expect(r.status).toBe(201);
    expect(await r.json()).toEqual({ extracted: true, files: 3, entries: 5, targetPath: "up" });
    const check = await exec(id, "id -u; stat -c %u up/project/readme.md; ./up/project/bin/tool; readlink up/project/docs; cat up/project/copy.md");
    const [me, owner, ...rest] = check.stdout.trim().split("\n");
    expect(owner).toBe(me);
    expect(rest).toEqual(["tool", "readme.md", "# hi"]);
  });

  it("answers the typed client's file methods", async () => {
    const { id } = await newSession();
    expect(await client.writeFiles(id, [{ path: "t.txt", content: "typed", encoding: "utf8" }])).toEqual([{ path: "t.txt", size: 5 }]);
    expect((await client.readFile(id, "t.txt")).text()).toBe("typed");
    const { tarGzOf } = await import("../helpers/tar-build");
    expect(await client.uploadWorkspace(id, tarGzOf([{ name: "u.txt", content: "u" }]))).toMatchObject({ files: 1 });
    expect((await client.readFile(id, "u.txt")).text()).toBe("u");
    await client.deleteFile(id, "u.txt");
    expect(await client.readFile(id, "u.txt").catch((e) => e.statusCode)).toBe(404);
  });
});

describe("health pool counters and deleted agents", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url });
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const pool = async () => ((await (await fetch(`${server.url}/health`)).json()) as any).pool;

  it("documents every route it adds in its OpenAPI reference", async () => {
    const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as any;
    const expected: Array<[string, string[]]> = [
      ["/api/agents/{name}", ["patch", "delete"]],
      ["/api/agents/{name}/files", ["get", "post"]],
      ["/api/agents/{name}/files/{path}", ["get"]],
      ["/api/agents/{name}/versions", ["get", "post"]],
      ["/api/agents/{name}/versions/{version}", ["get"]],
      ["/api/agents/{name}/versions/{version}/activate", ["post"]],
      ["/api/agents/{name}/config", ["get", "patch"]],
      ["/api/sessions/{id}/files", ["get", "post"]],
      ["/api/sessions/{id}/files/{path}", ["get", "delete"]],
      ["/api/sessions/{id}/workspace", ["get", "post"]],
    ];
    for (const [path, methods] of expected) for (const method of methods) expect(doc.paths[path]?.[method], `${method} ${path}`).toBeDefined();
  });
  const metric = async (kind: string) => {
    const text = await (await server.api("/metrics")).text();
    const line = text.split("\n").find((l) => l.startsWith(`ash_resume_hits_total{kind="${kind}"}`));
    return line ? Number(line.split(" ").at(-1)) : 0;
  };

  it("counts warm and cold resumes in /health and /metrics", async () => {
    await server.api("/api/agents", { method: "POST", json: agentUpload("resumer") });
    const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "resumer" } })).json();
    expect(await pool()).toMatchObject({ resumeWarmHits: 0, resumeColdHits: 0 });
    expect((await server.api(`/api/sessions/${session.id}/resume`, { method: "POST" })).status).toBe(200);
    expect(await pool()).toMatchObject({ resumeWarmHits: 1, resumeColdHits: 0 });
    await server.api(`/api/sessions/${session.id}/pause`, { method: "POST" });
    expect((await server.api(`/api/sessions/${session.id}/resume`, { method: "POST" })).status).toBe(200);
    expect(await pool()).toMatchObject({ resumeWarmHits: 1, resumeColdHits: 1 });
    expect(await metric("warm")).toBe(1);
    expect(await metric("cold")).toBe(1);
  });

  it("keeps sessions of a deleted agent running on their version; new sessions of the name get 404", async () => {
    await server.api("/api/agents", { method: "POST", json: agentUpload("doomed", { "data/v.txt": "v1" }) });
    const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "doomed" } })).json();
    await server.api(`/api/sessions/${session.id}/pause`, { method: "POST" });
    const del = await server.api("/api/agents/doomed", { method: "DELETE" });
    expect(del.status).toBe(200);
    expect(await del.json()).toMatchObject({ ok: true, deleted: true, agent: { name: "doomed" } });

    const fresh = await server.api("/api/sessions", { method: "POST", json: { agent: "doomed" } });
    expect(fresh.status).toBe(404);
    expect((await fresh.json()).error).toMatch(/No agent named "doomed"/);
    // The paused session comes back on the version it started with, files and all.
    expect((await server.api(`/api/sessions/${session.id}/resume`, { method: "POST" })).status).toBe(200);
    const events = await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "hello" } }));
    expect(events.at(-1)?.event).toBe("done");
    expect(events.some((e) => e.event === "error")).toBe(false);
    const file = await server.api(`/api/sessions/${session.id}/files/data/v.txt`);
    expect(await file.text()).toBe("v1");

    // A new agent of the same name is a new agent: version 1, and the old session keeps its own.
    await server.api("/api/agents", { method: "POST", json: agentUpload("doomed", { "data/v.txt": "new" }) });
    expect((await (await server.api("/api/agents/doomed")).json()).agent.version).toBe(1);
    expect((await (await server.api(`/api/sessions/${session.id}`)).json()).session).toMatchObject({ agentName: "doomed", agentVersion: 1 });
    await server.api(`/api/sessions/${session.id}/stop`, { method: "POST" });
    await server.api(`/api/sessions/${session.id}/resume`, { method: "POST" });
    expect(await (await server.api(`/api/sessions/${session.id}/files/data/v.txt`)).text()).toBe("v1");
  });
});

describe("history, timeline, usage and analytics as the original API answers them", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let sessionId: string;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url });
    await server.api("/api/agents", { method: "POST", json: agentUpload("historian") });
    sessionId = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "historian" } })).json()).session.id;
    for (const content of ["#bash echo from-the-tool", "and a plain answer"]) {
      const events = await readEvents(await server.api(`/api/sessions/${sessionId}/messages`, { method: "POST", json: { content } }));
      expect(events.at(-1)?.event).toBe("done");
    }
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const get = async (path: string) => {
    const r = await server.api(path);
    expect(r.status, path).toBe(200);
    return (await r.json()) as any;
  };

  it("lists history rows with role user or assistant and the SDK message as a JSON string", async () => {
    const { messages } = await get(`/api/sessions/${sessionId}/messages`);
    expect(new Set(messages.map((m: any) => m.role))).toEqual(new Set(["user", "assistant"]));
    expect(new Set(messages.map((m: any) => m.kind))).toEqual(new Set(["user", "assistant", "tool", "result"]));
    for (const m of messages) {
      expect(typeof m.content).toBe("string");
      expect(m.sessionId).toBe(sessionId);
    }
    const parsed = messages.map((m: any) => JSON.parse(m.content));
    expect(parsed[0]).toEqual({ type: "user", content: "#bash echo from-the-tool" });
    const toolUse = parsed.find((p: any) => p.type === "assistant" && p.message.content.some((b: any) => b.type === "tool_use"));
    expect(toolUse.message).toMatchObject({ role: "assistant", content: expect.arrayContaining([expect.objectContaining({ type: "tool_use", name: "Bash" })]) });
    const toolResult = messages.find((m: any) => m.kind === "tool");
    expect(toolResult.role).toBe("user");
    expect(JSON.parse(toolResult.content)).toMatchObject({ type: "user", message: { role: "user", content: [expect.objectContaining({ type: "tool_result" })] } });
    const results = parsed.filter((p: any) => p.type === "result");
    expect(results).toHaveLength(2);
    expect(results[1]).toMatchObject({ subtype: "success", is_error: false, result: expect.stringContaining("and a plain answer") });
  });

  it("answers the timeline shape with format=timeline, filtered by type and paged without gaps", async () => {
    const { events } = await get(`/api/sessions/${sessionId}/events?format=timeline`);
    const types = events.map((e: any) => e.type);
    expect(types).toEqual(expect.arrayContaining(["tool_start", "tool_result", "text", "turn_complete"]));
    expect(types.filter((t: string) => t === "turn_complete")).toHaveLength(2);
    for (const e of events) expect(e).toMatchObject({ id: expect.any(String), sessionId, sequence: expect.any(Number), createdAt: expect.any(String), data: expect.any(String) });
    const start = JSON.parse(events.find((e: any) => e.type === "tool_start").data);
    expect(start).toMatchObject({ toolName: "Bash", toolId: expect.any(String), input: { command: "echo from-the-tool" } });
    const result = JSON.parse(events.find((e: any) => e.type === "tool_result").data);
    expect(result.toolId).toBe(start.toolId);
    expect(JSON.stringify(result)).toContain("from-the-tool");

    const onlyStarts = await get(`/api/sessions/${sessionId}/events?format=timeline&type=tool_start`);
    expect(onlyStarts.events.map((e: any) => e.id)).toEqual(events.filter((e: any) => e.type === "tool_start").map((e: any) => e.id));

    // Page by page, one at a time: the same events, none twice.
    const paged: string[] = [];
    let after = 0;
    for (let round = 0; round < 200; round++) {
      const page = (await get(`/api/sessions/${sessionId}/events?format=timeline&limit=1&after=${after}`)).events;
      if (page.length === 0) break;
      paged.push(...page.map((e: any) => e.id));
      after = page.at(-1).sequence;
    }
    expect(paged).toEqual(events.map((e: any) => e.id));
    // Our own shape is unchanged without the parameter.
    expect((await get(`/api/sessions/${sessionId}/events?limit=1`)).events[0]).toMatchObject({ sequence: 1, type: "session_start" });
  });

  it("refuses a bad format or timeline type with a 400", async () => {
    for (const query of ["format=xml", "format=timeline&type=banana"]) {
      const r = await server.api(`/api/sessions/${sessionId}/events?${query}`);
      expect(r.status, query).toBe(400);
      expect((await r.json()).error).toMatch(query.includes("banana") ? /"type" must be one of text, tool_start/ : /"format" can only be "timeline"/);
    }
  });

  it("adds the original's usage events and flat stats to our usage answers, with its query names", async () => {
    const ours = await get(`/api/usage?session=${sessionId}`);
    expect(ours.usage.length).toBeGreaterThan(0);
    const input = ours.usage.reduce((n: number, u: any) => n + u.inputTokens, 0);
    const output = ours.usage.reduce((n: number, u: any) => n + u.outputTokens, 0);
    const sum = (type: string) => ours.events.filter((e: any) => e.eventType === type).reduce((n: number, e: any) => n + e.value, 0);
    expect(sum("input_tokens")).toBe(input);
    expect(sum("output_tokens")).toBe(output);
    expect(ours.events[0]).toMatchObject({ sessionId, agentName: "historian", createdAt: expect.any(String) });
    // The original's names for the same filter.
    expect((await get(`/api/usage?sessionId=${sessionId}&agentName=historian`)).usage).toEqual(ours.usage);
    expect((await get(`/api/usage?agentName=nobody`)).usage).toEqual([]);
    expect((await get(`/api/usage?before=2000-01-01T00:00:00Z`)).usage).toEqual([]);

    const { stats, totals } = await get(`/api/usage/stats?sessionId=${sessionId}`);
    const { messages } = await get(`/api/sessions/${sessionId}/messages`);
    expect(stats).toMatchObject({
      totalInputTokens: totals.inputTokens,
      totalOutputTokens: totals.outputTokens,
      totalToolCalls: 1,
      totalMessages: messages.filter((m: any) => m.kind === "user" || m.kind === "assistant").length,
    });
    expect(stats.totalComputeSeconds).toBeGreaterThan(0);
    expect((await get(`/api/usage/stats?after=2999-01-01T00:00:00Z`)).stats).toMatchObject({ totalInputTokens: 0, totalToolCalls: 0, totalMessages: 0, totalComputeSeconds: 0 });
    const bad = await server.api(`/api/usage/stats?after=yesterday`);
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toMatch(/"after" must be an ISO 8601 time/);
  });

  it("answers the typed client's usage, analytics and timeline methods", async () => {
    const client = new AshClient({ url: server.url, apiKey: server.apiKey });
    const page = await client.listUsage({ session: sessionId, limit: 1 });
    expect(page.usage).toHaveLength(1);
    expect(page.nextCursor).toBeTruthy();
    const rest = await client.listUsage({ session: sessionId, cursor: page.nextCursor! });
    expect(rest.usage.map((u) => u.id)).not.toContain(page.usage[0]!.id);
    const stats = await client.usageStats({ agent: "historian" });
    expect(stats.stats.totalToolCalls).toBe(1);
    expect(stats.groups[0]).toMatchObject({ agentName: "historian" });
    expect((await client.analytics()).sessions.total).toBe(1);
    const starts = await client.listTimeline(sessionId, { type: "tool_start" });
    expect(starts).toHaveLength(1);
    expect(JSON.parse(starts[0]!.data).toolName).toBe("Bash");
    expect(await client.listTimeline(sessionId, { after: starts[0]!.sequence, type: "tool_start" })).toEqual([]);
  });

  it("summarises a tenant in /api/analytics, and another tenant sees only its own", async () => {
    const all = await get(`/api/analytics`);
    expect(all).toMatchObject({
      agents: { total: 1 },
      sessions: { total: 1, byStatus: { active: 1 } },
      evals: { totalRuns: 0, byStatus: {} },
    });
    expect(all.usage).toEqual((await get(`/api/usage/stats`)).stats);
    expect((await get(`/api/analytics?after=2999-01-01T00:00:00Z`)).usage.totalInputTokens).toBe(0);

    const key = await (await server.api("/api/api-keys", { method: "POST", json: { tenant: "elsewhere", scope: "read" } })).json();
    const other = await (await fetch(`${server.url}/api/analytics`, { headers: { authorization: `Bearer ${key.key}` } })).json();
    expect(other).toEqual({
      agents: { total: 0 },
      sessions: { total: 0, byStatus: {} },
      usage: { totalInputTokens: 0, totalOutputTokens: 0, totalCacheCreationTokens: 0, totalCacheReadTokens: 0, totalToolCalls: 0, totalMessages: 0, totalComputeSeconds: 0 },
      evals: { totalRuns: 0, byStatus: {} },
    });
  });
});
