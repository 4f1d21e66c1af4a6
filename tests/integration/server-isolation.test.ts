import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";

// What a session's own code (the agent's Bash tool, or exec) must not be able to do.
describe("isolation between a session and everything else", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let victim: { id: string; sandboxId: string };
  let attacker: { id: string; sandboxId: string };

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_DATABASE_URL: "", OTHER_SERVER_SECRET: "do-not-leak-9931" } });
    await server.api("/api/agents", { method: "POST", json: agentUpload("iso", {}, { env: { AGENT_TOKEN: "agent-token-4411" } }) });
    const make = async () => (await (await server.api("/api/sessions", { method: "POST", json: { agent: "iso" } })).json()).session;
    victim = await make();
    attacker = await make();
    const wrote = await server.api(`/api/sessions/${victim.id}/exec`, { method: "POST", json: { command: "echo victim-secret > secret.txt && echo tmp-secret > /tmp/secret" } });
    expect((await wrote.json()).exitCode).toBe(0);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const exec = async (command: string) => (await (await server.api(`/api/sessions/${attacker.id}/exec`, { method: "POST", json: { command } })).json());

  it("runs as a non-root user with its own workspace as the working folder", async () => {
    const r = await exec("id -u; pwd; cat CLAUDE.md");
    const [uid, cwd] = r.stdout.split("\n");
    expect(Number(uid)).toBeGreaterThan(0);
    expect(cwd).toBe(join(server.dataDir, "sandboxes", attacker.sandboxId, "workspace"));
  });

  it.each([
    ["another session's workspace", (s: TestServer) => `cat ${join(s.dataDir, "sandboxes")}/*/workspace/secret.txt`],
    ["another session's snapshot", (s: TestServer) => `cat ${join(s.dataDir, "sessions")}/*/workspace/secret.txt`],
    ["the database file", (s: TestServer) => `head -c 100 ${join(s.dataDir, "ash.db")}`],
    ["the agents folder", (s: TestServer) => `ls ${join(s.dataDir, "agents")}`],
    ["the first-boot key", (s: TestServer) => `cat ${join(s.dataDir, "initial-api-key")}`],
    ["another session's /tmp", () => "cat /tmp/secret"],
  ])("cannot read %s", async (_what, command) => {
    const r = await exec(command(server));
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout).not.toContain("victim-secret");
    expect(r.stdout).not.toContain("tmp-secret");
    expect(r.stdout).not.toContain("SQLite");
  });

  it("cannot write outside its workspace", async () => {
    for (const target of [join(server.dataDir, "planted"), join(server.dataDir, "sandboxes", victim.sandboxId, "workspace", "planted"), "/etc/planted", "/usr/planted"]) {
      const r = await exec(`echo x > ${target}`);
      expect(r.exitCode).not.toBe(0);
    }
    const check = await (await server.api(`/api/sessions/${victim.id}/exec`, { method: "POST", json: { command: "ls" } })).json();
    expect(check.stdout).not.toContain("planted");
  });

  it("sees neither the server's environment nor its processes", async () => {
    const env = await exec("env");
    expect(env.stdout).not.toContain(server.apiKey);
    expect(env.stdout).not.toContain("do-not-leak-9931");
    expect(env.stdout).not.toMatch(/ASH_API_KEY|ASH_DATABASE_URL/);
    // The agent's own declared variables are there.
    expect(env.stdout).toContain("AGENT_TOKEN=agent-token-4411");
    const signal = await exec(`kill -0 ${server.pid()}`);
    expect(signal.exitCode).not.toBe(0);
    const ps = await exec("ls /proc | grep -E '^[0-9]+$' | wc -l");
    expect(Number(ps.stdout.trim())).toBeLessThan(20);
    const environ = await exec(`cat /proc/${server.pid()}/environ`);
    expect(environ.stdout).not.toContain(server.apiKey);
  });

  it("holds the same walls for the agent's Bash tool", async () => {
    const events = await readEvents(
      await server.api(`/api/sessions/${attacker.id}/messages`, {
        method: "POST",
        json: { content: `#bash cat ${join(server.dataDir, "sandboxes", victim.sandboxId, "workspace", "secret.txt")}; env | grep -c ASH_ ; kill -9 ${server.pid()}; echo end` },
      }),
    );
    const result = events.find((e) => e.event === "tool_result")!.data;
    const content = JSON.stringify(result.content);
    expect(content).not.toContain("victim-secret");
    expect(content).toContain("end");
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });
});
