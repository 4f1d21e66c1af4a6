import { createServer as createHttpServer } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelGateway } from "../../src/gateway/gateway";
import { serveGateway } from "../helpers/gateway-front";

describe("a priming spare's model calls", () => {
  let upstreamCalls = 0;
  let usageReports = 0;
  const upstream = createHttpServer((req, res) => {
    upstreamCalls++;
    req.resume();
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ id: "msg_up", type: "message", role: "assistant", content: [{ type: "text", text: "from upstream" }], usage: { input_tokens: 3, output_tokens: 2 } }));
  });
  const gateway = new ModelGateway({ usage: () => void usageReports++ });
  let front: Awaited<ReturnType<typeof serveGateway>>;
  let url: string;

  beforeAll(async () => {
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
    front = await serveGateway(gateway);
    url = front.url;
  });
  afterAll(async () => {
    gateway.close();
    await front.close();
    upstream.closeAllConnections();
    await new Promise((r) => upstream.close(r));
  });

  it("are answered by the gateway itself, streamed or not, never forwarded or counted; afterwards calls go upstream again", async () => {
    const upstreamUrl = `http://127.0.0.1:${(upstream.address() as { port: number }).port}`;
    const { token, grant } = gateway.issue({ sandboxId: "s1", agentName: "a", upstream: { baseUrl: upstreamUrl, apiKey: "sk-real", keyId: "server" } });
    const call = (body: unknown, path = "/v1/messages"): Promise<Omit<Response, "json"> & { json(): Promise<any> }> =>
      fetch(url + path, { method: "POST", headers: { "x-api-key": token, "content-type": "application/json" }, body: JSON.stringify(body) });

    grant.priming = true;
    const streamed = await call({ model: "m", stream: true, max_tokens: 10, messages: [{ role: "user", content: "ok" }] });
    expect(streamed.status).toBe(200);
    expect(streamed.headers.get("content-type")).toContain("text/event-stream");
    const text = await streamed.text();
    for (const event of ["message_start", "content_block_delta", "message_delta", "message_stop"]) expect(text).toContain(`event: ${event}`);
    expect(text).toContain('"text_delta","text":"ok"');
    const whole = await (await call({ model: "m", max_tokens: 10, messages: [{ role: "user", content: "ok" }] })).json();
    expect(whole.content).toEqual([{ type: "text", text: "ok" }]);
    expect((await (await call({ model: "m", messages: [] }, "/v1/messages/count_tokens")).json()).input_tokens).toBe(1);
    expect(upstreamCalls).toBe(0);
    expect(usageReports).toBe(0);

    grant.priming = false;
    const forwarded = (await (await call({ model: "m", max_tokens: 10, messages: [{ role: "user", content: "hi" }] })).json());
    expect(forwarded.content[0].text).toBe("from upstream");
    expect(upstreamCalls).toBe(1);
  });
});
