import { describe, expect, it } from "vitest";
import { SseParser, readSseFrames, type SseFrame } from "../../src/client/sse";

/** Feeds `text` to a fresh parser in pieces cut at `cuts` and collects frames and comments. */
function parseInPieces(text: string, cuts: number[]) {
  const comments: string[] = [];
  const retries: number[] = [];
  const parser = new SseParser({ onComment: (c) => comments.push(c), onRetry: (ms) => retries.push(ms) });
  const frames: SseFrame[] = [];
  let at = 0;
  for (const cut of [...cuts, text.length]) {
    frames.push(...parser.push(text.slice(at, cut)));
    at = cut;
  }
  parser.end();
  return { frames, comments, retries };
}

const turn =
  'id: 1\nevent: session_start\ndata: {"sessionId":"s1"}\n\n' +
  ": ping\n\n" +
  'id: 2\nevent: text_delta\ndata: {"delta":"Hel"}\n\n' +
  'id: 3\nevent: text_delta\ndata: {"delta":"lo é ✓"}\n\n' +
  'id: 4\nevent: done\ndata: {"sessionId":"s1"}\n\n';

const expected: SseFrame[] = [
  { id: "1", event: "session_start", data: '{"sessionId":"s1"}' },
  { id: "2", event: "text_delta", data: '{"delta":"Hel"}' },
  { id: "3", event: "text_delta", data: '{"delta":"lo é ✓"}' },
  { id: "4", event: "done", data: '{"sessionId":"s1"}' },
];

describe("SseParser", () => {
  it("gives the same frames however the text is split, down to one character at a time", () => {
    const whole = parseInPieces(turn, []);
    expect(whole.frames).toEqual(expected);
    expect(whole.comments).toEqual([" ping"]);

    const everyChar = parseInPieces(turn, Array.from({ length: turn.length }, (_, i) => i));
    expect(everyChar.frames).toEqual(expected);
    expect(everyChar.comments).toEqual([" ping"]);

    for (let cut = 1; cut < turn.length; cut++) {
      expect(parseInPieces(turn, [cut]).frames).toEqual(expected);
    }
  });

  it("accepts CRLF and lone CR line ends, including a CRLF split between two chunks", () => {
    const crlf = turn.replace(/\n/g, "\r\n");
    for (let cut = 1; cut < crlf.length; cut++) {
      expect(parseInPieces(crlf, [cut]).frames).toEqual(expected);
    }
    const cr = turn.replace(/\n/g, "\r");
    expect(parseInPieces(cr, []).frames).toEqual(expected);
    // A CR at the end of one chunk and LF at the start of the next is one line end, not a blank line.
    const { frames } = parseInPieces("data: a\r\ndata: b\r\n\r\n", ["data: a\r".length]);
    expect(frames).toEqual([{ event: "message", data: "a\nb" }]);
  });

  it("joins multi-line data with newlines and strips only one leading space", () => {
    const { frames } = parseInPieces("event: message\ndata:  two spaces\ndata:none\ndata\ndata: {\"a\":1}\n\n", []);
    expect(frames).toEqual([{ event: "message", data: ' two spaces\nnone\n\n{"a":1}' }]);
  });

  it("skips comments and data-less blocks, keeps ids across frames and reports retry hints", () => {
    const { frames, comments, retries } = parseInPieces(
      ":first\n: ping\n\nid: 7\n\nretry: 1500\nevent: tool_use\ndata: {}\n\nretry: soon\ndata: x\n\n",
      [],
    );
    expect(comments).toEqual(["first", " ping"]);
    expect(retries).toEqual([1500]);
    // The id set by the data-less block carries to the next frames, as the spec's "last event ID".
    expect(frames).toEqual([
      { id: "7", event: "tool_use", data: "{}" },
      { id: "7", event: "message", data: "x" },
    ]);
  });

  it("drops a frame that the end of the body cut off", () => {
    const parser = new SseParser();
    expect(parser.push('id: 9\nevent: done\ndata: {"sessionId":"s"}\n')).toEqual([]);
    parser.end();
    expect(parser.push("\n")).toEqual([]);
  });

  it("ignores a leading byte order mark and unknown fields", () => {
    const { frames } = parseInPieces("\ufeffdata: one\nfoo: bar\n\n", []);
    expect(frames).toEqual([{ event: "message", data: "one" }]);
  });
});

describe("readSseFrames", () => {
  it("decodes bytes split inside multi-byte characters", async () => {
    const bytes = new TextEncoder().encode(turn);
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        // Three-byte pieces cut through "é" and "✓".
        for (let i = 0; i < bytes.length; i += 3) controller.enqueue(bytes.slice(i, i + 3));
        controller.close();
      },
    });
    const frames: SseFrame[] = [];
    for await (const frame of readSseFrames(body)) frames.push(frame);
    expect(frames).toEqual(expected);
  });

  it("cancels the body when the reader stops early", async () => {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(new TextEncoder().encode("data: tick\n\n"));
      },
      cancel() {
        cancelled = true;
      },
    });
    let count = 0;
    for await (const frame of readSseFrames(body)) {
      expect(frame.data).toBe("tick");
      if (++count === 3) break;
    }
    expect(cancelled).toBe(true);
  });
});
