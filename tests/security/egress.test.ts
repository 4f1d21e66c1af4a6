// A sandbox has no network but its own loopback: nothing on the host is
// reachable, directly or through the proxies, except allowlisted names.
import { createServer, type Server } from "node:http";
import { createServer as createTcpServer, type Server as TcpServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";

function listen<T extends Server | TcpServer>(server: T): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
}

describe("egress from a sandbox", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let hostOnly: Server;
  let hostOnlyPort: number;
  let allowedSite: Server;
  let allowedPort: number;
  let dbStandIn: TcpServer;
  let dbPort: number;
  let sessionId: string;

  beforeAll(async () => {
    model = await startFakeModel();
    hostOnly = createServer((_req, res) => res.end("host-only-secret-3321"));
    hostOnlyPort = await listen(hostOnly);
    allowedSite = createServer((req, res) => res.end(`allowed-site-ok ${req.headers.host}`));
    allowedPort = await listen(allowedSite);
    // The database port: the test PostgreSQL's when there is one, else a listener standing in for it.
    const pg = process.env.ASH_TEST_POSTGRES_URL ? new URL(process.env.ASH_TEST_POSTGRES_URL) : undefined;
    dbStandIn = createTcpServer((socket) => socket.end("db-stand-in-9902"));
    dbPort = pg?.port ? Number(pg.port) : await listen(dbStandIn);
    server = await startTestServer({
      modelUrl: model.url,
      env: {
        // Test-only name answers: both names point at the host's loopback; only one is allowlisted.
        ASH_EGRESS_TEST_HOSTS: `allowed.test=127.0.0.1,denied.test=127.0.0.1,manifest.test=127.0.0.1`,
      },
    });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("net", { "ash.json": JSON.stringify({ egress: [`manifest.test:${allowedPort}`] }) }, { egress: [`allowed.test:${allowedPort}`] }) })).status).toBe(201);
    sessionId = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "net" } })).json()).session.id;
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    hostOnly?.close();
    allowedSite?.close();
    dbStandIn?.close();
  });

  const exec = async (command: string) => {
    const r = await server.api(`/api/sessions/${sessionId}/exec`, { method: "POST", json: { command, timeout: 60_000 } });
    expect(r.status).toBe(200);
    return (await r.json()) as { exitCode: number; stdout: string; stderr: string };
  };
  const targets = () => [
    ["the Ash API", "127.0.0.1", server.port],
    ["the database port", "127.0.0.1", dbPort],
    ["the model directly", "127.0.0.1", model.port],
    ["a host-only server", "127.0.0.1", hostOnlyPort],
    ["the metadata address", "169.254.169.254", 80],
  ] as const;

  it("has no interface but loopback", async () => {
    const r = await exec("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '");
    expect(r.stdout.trim().split("\n")).toEqual(["lo"]);
  });

  it("reaches nothing on the host with curl, node or python, directly or through the proxies", async () => {
    for (const [what, host, port] of targets()) {
      // Directly (no proxy): the sandbox's loopback is its own, and it has no route anywhere else.
      const curl = await exec(`curl -sS -m 10 --noproxy '*' http://${host}:${port}/; echo " rc=$?"`);
      expect(curl.stdout, what).toMatch(/rc=[1-9]/);
      const viaHttpProxy = await exec(`curl -sS -m 10 --noproxy '' -x "$HTTP_PROXY" http://${host}:${port}/; echo " rc=$?"`);
      expect(viaHttpProxy.stdout, what).toContain("Ash egress proxy");
      expect(viaHttpProxy.stdout, what).toContain("refused");
      const viaConnect = await exec(`curl -sS -m 10 --noproxy '' -p -x "$HTTP_PROXY" http://${host}:${port}/ 2>&1; echo " rc=$?"`);
      expect(viaConnect.stdout, what).toMatch(/403|rc=[1-9]/);
      expect(viaConnect.stdout, what).not.toMatch(/host-only-secret|db-stand-in|Echo|"status"/);
      const viaSocks = await exec(`curl -sS -m 10 --noproxy '' --socks5-hostname 127.0.0.1:1080 http://${host}:${port}/ 2>&1; echo " rc=$?"`);
      expect(viaSocks.stdout, what).toMatch(/rc=97|not allowed|rc=[1-9]/);
      const node = await exec(`node -e 'const s=require("net").connect(${port},"${host}");s.setTimeout(5000,()=>{console.log("timeout");process.exit(3)});s.on("connect",()=>{console.log("CONNECTED");process.exit(0)});s.on("error",e=>{console.log(e.code);process.exit(2)})'`);
      expect(node.stdout, what).not.toContain("CONNECTED");
      const python = await exec(`python3 -c 'import socket; socket.create_connection(("${host}", ${port}), timeout=5); print("CONNECTED")' 2>&1; echo rc=$?`);
      expect(python.stdout, what).not.toContain("CONNECTED");
      for (const out of [curl.stdout, viaHttpProxy.stdout, viaSocks.stdout]) expect(out).not.toMatch(/host-only-secret|db-stand-in|Echo:/);
    }
  });

  it("reaches an allowlisted name through the HTTP proxy, CONNECT and SOCKS5; refuses a name not on the list with egress_denied", async () => {
    const plain = await exec(`curl -sS -m 10 http://allowed.test:${allowedPort}/`);
    expect(plain.stdout).toBe(`allowed-site-ok allowed.test:${allowedPort}`);
    const tunnel = await exec(`curl -sS -m 10 -p -x "$HTTP_PROXY" http://allowed.test:${allowedPort}/`);
    expect(tunnel.stdout).toBe(`allowed-site-ok allowed.test:${allowedPort}`);
    const socks = await exec(`curl -sS -m 10 --noproxy '' -x "$ALL_PROXY" http://allowed.test:${allowedPort}/`);
    expect(socks.stdout).toBe(`allowed-site-ok allowed.test:${allowedPort}`);
    // Named in the agent folder's ash.json rather than on deploy.
    const manifest = await exec(`curl -sS -m 10 http://manifest.test:${allowedPort}/`);
    expect(manifest.stdout).toBe(`allowed-site-ok manifest.test:${allowedPort}`);
    // The same site under a name not on the list, and the allowed name on another port.
    const denied = await exec(`curl -sS -m 10 http://denied.test:${allowedPort}/; echo " rc=$?"`);
    expect(denied.stdout).toContain("Ash egress proxy: the connection to denied.test");
    expect(denied.stdout).toContain("not in this agent's egress allowlist");
    expect(denied.stdout).not.toContain("allowed-site-ok");
    const otherPort = await exec(`curl -sS -m 10 http://allowed.test:${hostOnlyPort}/; echo " rc=$?"`);
    expect(otherPort.stdout).not.toContain("host-only-secret");
    const events = (await (await server.api(`/api/sessions/${sessionId}/events?type=egress_denied&limit=1000`)).json()).events;
    expect(events.map((e: any) => e.data)).toEqual(expect.arrayContaining([expect.objectContaining({ host: "denied.test", port: allowedPort })]));
    const metrics = await (await server.api("/metrics")).text();
    expect(metrics).toMatch(/ash_egress_connections_total\{result="denied"\} [1-9]/);
    expect(metrics).toMatch(/ash_egress_connections_total\{result="allowed"\} [1-9]/);
  });

  it("holds for the agent's Bash tool, and a denial shows up in the turn's own stream", async () => {
    const events = await readEvents(
      await server.api(`/api/sessions/${sessionId}/messages`, {
        method: "POST",
        json: { content: `#bash curl -sS -m 10 http://127.0.0.1:${server.port}/health; echo " rc=$?"; curl -sS -m 10 http://denied.test:${allowedPort}/; curl -sS -m 10 http://allowed.test:${allowedPort}/` },
      }),
    );
    const result = JSON.stringify(events.find((e) => e.event === "tool_result")!.data.content);
    expect(result).not.toContain('"status"');
    expect(result).toMatch(/rc=[1-9]/);
    expect(result).toContain("Ash egress proxy: the connection to denied.test");
    expect(result).toContain("allowed-site-ok");
    expect(events.some((e) => e.event === "egress_denied" && e.data.host === "denied.test")).toBe(true);
    expect(events.at(-1)?.event).toBe("done");
  });
});
