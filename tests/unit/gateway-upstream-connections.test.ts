import { createServer as createHttpServer, type IncomingMessage } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelGateway } from "../../src/gateway/gateway";
import { serveGateway } from "../helpers/gateway-front";

// An upstream that closes a kept-alive connection just as the gateway reuses it (the race of an
// idle timeout) must not fail the agent's turn; an upstream that really is broken still does.
describe("the model gateway's upstream connections", () => {
  /** "reuse": reset the second call on a connection; "always": reset every call. */
  let mode: "reuse" | "always" = "reuse";
  const seen: Array<{ body: string; onReusedConnection: boolean }> = [];
  const callsPerSocket = new WeakMap<object, number>();
  const upstream = createHttpServer({ keepAliveTimeout: 60_000 }, (req: IncomingMessage, res) => {
    const n = (callsPerSocket.get(req.socket) ?? 0) + 1;
    callsPerSocket.set(req.socket, n);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      seen.push({ body: Buffer.concat(chunks).toString("utf8"), onReusedConnection: n > 1 });
      if (mode === "always" || n > 1) return void req.socket.destroy();
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id: "msg_up", type: "message", role: "assistant", content: [{ type: "text", text: Buffer.concat(chunks).toString("utf8") }], usage: { input_tokens: 1, output_tokens: 1 } }));
    });
  });
  const gateway = new ModelGateway();
  let front: Awaited<ReturnType<typeof serveGateway>>;
  let url: string;
  let token: string;

  beforeAll(async () => {
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
    front = await serveGateway(gateway);
    url = front.url;
    const upstreamUrl = `http://127.0.0.1:${(upstream.address() as { port: number }).port}`;
    token = gateway.issue({ sandboxId: "s1", agentName: "a", upstream: { baseUrl: upstreamUrl, apiKey: "sk-real", keyId: "server" } }).token;
  });
  afterAll(async () => {
    gateway.close();
    await front.close();
    upstream.closeAllConnections();
    await new Promise((r) => upstream.close(r));
  });

  const call = (text: string) =>
    fetch(`${url}/v1/messages`, { method: "POST", headers: { "x-api-key": token, "content-type": "application/json" }, body: JSON.stringify({ model: "m", max_tokens: 5, messages: [{ role: "user", content: text }] }) });

  it("sends a call again, once and on a new connection, when the kept-alive one is reset before any answer", async () => {
    seen.length = 0;
    mode = "reuse";
    const first = await call("first");
    expect(first.status).toBe(200);
    await first.text();
    const second = await call("second");
    expect(second.status).toBe(200);
    expect(JSON.parse(((await second.json()) as any).content[0].text).messages[0].content).toBe("second");
    // The reset call, then the same bytes on a connection of their own.
    expect(seen.map((s) => [JSON.parse(s.body).messages[0].content, s.onReusedConnection])).toEqual([
      ["first", false],
      ["second", true],
      ["second", false],
    ]);
  });

  it("answers 502 in the Messages API's shape when the new connection fails too, without trying a third time", async () => {
    mode = "reuse";
    await (await call("warm")).text();
    seen.length = 0;
    mode = "always";
    const broken = await call("doomed");
    expect(broken.status).toBe(502);
    expect(await broken.json()).toMatchObject({ type: "error", error: { type: "api_error", message: expect.stringContaining("could not reach the model API") } });
    expect(seen.map((s) => s.onReusedConnection)).toEqual([true, false]);
  });

  it("does not send a call again when a new connection is reset", async () => {
    gateway.close();
    const again = new ModelGateway();
    const upstreamUrl = `http://127.0.0.1:${(upstream.address() as { port: number }).port}`;
    const fresh = again.issue({ sandboxId: "s2", agentName: "a", upstream: { baseUrl: upstreamUrl, apiKey: "sk-real", keyId: "server" } }).token;
    const frontAgain = await serveGateway(again);
    try {
      seen.length = 0;
      mode = "always";
      const response = await fetch(`${frontAgain.url}/v1/messages`, {
        method: "POST",
        headers: { "x-api-key": fresh, "content-type": "application/json" },
        body: JSON.stringify({ model: "m", max_tokens: 5, messages: [{ role: "user", content: "once" }] }),
      });
      expect(response.status).toBe(502);
      expect(seen).toHaveLength(1);
    } finally {
      again.close();
      await frontAgain.close();
    }
  });
});
