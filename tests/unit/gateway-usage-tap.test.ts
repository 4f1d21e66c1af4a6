import { describe, expect, it } from "vitest";
import { UsageTap } from "../../src/gateway/usage-tap";

describe("reading usage as a response passes", () => {
  it("takes message_start and message_delta from an event stream cut at any byte", () => {
    const stream =
      `event: message_start\ndata: {"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":120,"cache_creation_input_tokens":7,"cache_read_input_tokens":30,"output_tokens":1}}}\n\n` +
      `event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi \\"message_delta\\""}}\n\n` +
      `event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}\n\n` +
      `event: message_stop\ndata: {"type":"message_stop"}\n\n`;
    const bytes = Buffer.from(stream);
    for (const size of [1, 3, 17, bytes.length]) {
      const tap = new UsageTap(true, "unknown");
      for (let i = 0; i < bytes.length; i += size) tap.push(bytes.subarray(i, i + size));
      expect(tap.found).toBe(true);
      expect(tap.finish()).toEqual({ model: "claude-x", inputTokens: 120, outputTokens: 42, cacheCreationTokens: 7, cacheReadTokens: 30 });
    }
  });

  it("reads a JSON answer's usage at its end, and nothing from a body without one", () => {
    const tap = new UsageTap(false, "unknown");
    tap.push(Buffer.from('{"model":"m1","usage":{"input_tokens":5,'));
    tap.push(Buffer.from('"output_tokens":9}}'));
    expect(tap.finish()).toMatchObject({ model: "m1", inputTokens: 5, outputTokens: 9 });
    const none = new UsageTap(false, "unknown");
    none.push(Buffer.from("not json"));
    none.finish();
    expect(none.found).toBe(false);
  });
});
