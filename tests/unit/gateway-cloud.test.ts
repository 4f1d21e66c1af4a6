import { describe, expect, it } from "vitest";
import { EventStreamCodec } from "@smithy/eventstream-codec";
import { fromUtf8, toUtf8 } from "@smithy/util-utf8";
import { EventStreamToSse } from "../../src/gateway/eventstream-sse";
import { bedrockModelId, parseCloudCredential, vertexModelId } from "../../src/gateway/cloud-credentials";
import { cloudCall, VertexTokens } from "../../src/gateway/cloud-requests";

const codec = new EventStreamCodec(toUtf8, fromUtf8);
const frame = (headers: Record<string, string>, body: string) =>
  Buffer.from(codec.encode({ headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, { type: "string" as const, value: v }])), body: fromUtf8(body) }));
const chunk = (event: object) => frame({ ":event-type": "chunk", ":message-type": "event" }, JSON.stringify({ bytes: Buffer.from(JSON.stringify(event)).toString("base64") }));

describe("Bedrock's event stream as server-sent events", () => {
  it("turns each chunk into one SSE event, however the bytes are split", () => {
    const events = [{ type: "message_start", message: { usage: { input_tokens: 3 } } }, { type: "content_block_delta", delta: { type: "text_delta", text: "hé" } }, { type: "message_stop" }];
    const bytes = Buffer.concat(events.map(chunk));
    for (const size of [1, 7, 64, bytes.length]) {
      const sse = new EventStreamToSse();
      let out = "";
      for (let i = 0; i < bytes.length; i += size) out += sse.push(bytes.subarray(i, i + size));
      out += sse.end();
      expect(out).toBe(events.map((e) => `event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`).join(""));
    }
  });

  it("ends with an error event on an exception, a corrupt frame, an absurd length, a cut stream or a foreign payload", () => {
    const cases: Array<[Buffer, RegExp]> = [
      [frame({ ":message-type": "exception", ":exception-type": "throttlingException" }, JSON.stringify({ message: "slow down" })), /rate_limit_error.*throttlingException: slow down/],
      [(() => { const b = chunk({ type: "ping" }); b[b.length - 1]! ^= 0xff; return b; })(), /corrupt/],
      [Buffer.from([0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]), /malformed/],
      [chunk({ type: "ping" }).subarray(0, 20), /ended in the middle/],
      [frame({ ":event-type": "chunk", ":message-type": "event" }, JSON.stringify({ bytes: Buffer.from('{"type":"x\\ny"}').toString("base64") })), /not a Messages API event/],
    ];
    for (const [bytes, message] of cases) {
      const sse = new EventStreamToSse();
      const out = sse.push(bytes) + sse.end();
      expect(out).toMatch(/^event: error\ndata: /);
      expect(out).toMatch(message);
      // Nothing after the error.
      expect(sse.push(chunk({ type: "ping" }))).toBe("");
    }
  });
});

describe("cloud model ids and calls", () => {
  const bedrock = parseCloudCredential("bedrock", JSON.stringify({ region: "us-east-1", apiKey: "ABSK-0123456789abcdef" }), "b");
  if (bedrock.kind !== "bedrock") throw new Error("parsed as the wrong kind");

  it("names models as each cloud does", () => {
    expect(bedrockModelId(bedrock.credential, "claude-sonnet-4-5-20250929")).toBe("anthropic.claude-sonnet-4-5-20250929-v1:0");
    expect(bedrockModelId({ ...bedrock.credential, inferenceProfile: "global" }, "claude-haiku-4-5-20251001")).toBe("global.anthropic.claude-haiku-4-5-20251001-v1:0");
    expect(bedrockModelId(bedrock.credential, "us.anthropic.claude-opus-4-1-20250805-v1:0")).toBe("us.anthropic.claude-opus-4-1-20250805-v1:0");
    expect(bedrockModelId({ ...bedrock.credential, models: { "claude-x": "arn:aws:bedrock:x" } }, "claude-x")).toBe("arn:aws:bedrock:x");
    const vertex = { region: "us-east5", serviceAccount: {} as any };
    expect(vertexModelId(vertex, "claude-sonnet-4-5-20250929")).toBe("claude-sonnet-4-5@20250929");
    expect(vertexModelId(vertex, "claude-sonnet-4-5@20250929")).toBe("claude-sonnet-4-5@20250929");
  });

  it("builds a Bedrock call from a Messages call, and refuses what has no counterpart", async () => {
    const tokens = new VertexTokens();
    const call = await cloudCall(bedrock, tokens, "POST", "/v1/messages", { "anthropic-beta": "a-1, b-2" }, Buffer.from(JSON.stringify({ model: "claude-x-20250101", stream: true, max_tokens: 5, messages: [] })));
    if (!("url" in call)) throw new Error(call.message);
    expect(call.url.toString()).toBe("https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-x-20250101-v1%3A0/invoke-with-response-stream");
    expect(JSON.parse(call.body.toString())).toEqual({ max_tokens: 5, messages: [], anthropic_version: "bedrock-2023-05-31", anthropic_beta: ["a-1", "b-2"] });
    expect(call.answer).toBe("eventstream");
    for (const [method, path, body, status] of [
      ["GET", "/v1/models", "", 404],
      ["POST", "/v1/messages/count_tokens", "{}", 404],
      ["POST", "/v1/messages", "not json", 400],
      ["POST", "/v1/messages", "[1]", 400],
      ["POST", "/v1/messages", '{"messages":[]}', 400],
    ] as const) {
      const refused = await cloudCall(bedrock, tokens, method, path, {}, Buffer.from(body));
      expect("status" in refused && refused.status, `${method} ${path} ${body}`).toBe(status);
    }
  });

  it("parses only well-formed credentials, naming the field that is wrong", () => {
    expect(() => parseCloudCredential("bedrock", "{", "x")).toThrow(/is JSON/);
    expect(() => parseCloudCredential("bedrock", JSON.stringify({ region: "Mars-1", apiKey: "ABSK-0123456789abcdef" }), "x")).toThrow(/"region" must be an AWS region/);
    expect(() => parseCloudCredential("vertex", JSON.stringify({ region: "us-east5", serviceAccount: { type: "service_account", client_email: "a@b", private_key: "nope" } }), "x")).toThrow(/private_key/);
  });
});
