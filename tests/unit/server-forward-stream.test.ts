import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { endAtFrameOnce } from "../../src/server/forward";

const bytes = (text: string) => new TextEncoder().encode(text);

/** An upstream stream whose chunks the test pushes one by one. */
function upstream() {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    start: (c) => void (controller = c),
    cancel: () => void (cancelled = true),
  });
  return { body, push: (text: string) => controller.enqueue(bytes(text)), end: () => controller.close(), cancelled: () => cancelled };
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  const reader = stream.getReader();
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) text += new TextDecoder().decode(chunk.value);
  return text;
}

describe("an event stream passed on from another server", () => {
  it("passes every byte on until the owner ends it", async () => {
    const up = upstream();
    const stop = new AbortController();
    const out = readAll(endAtFrameOnce(up.body, stop.signal));
    up.push("id: 1\nevent: a\ndata: {}\n\n");
    up.push(": ping\n\n");
    up.end();
    expect(await out).toBe("id: 1\nevent: a\ndata: {}\n\n: ping\n\n");
    // The stop signal is the server's, for its whole life: an ended stream leaves nothing on it.
    expect(getEventListeners(stop.signal, "abort")).toHaveLength(0);
  });

  it("leaves nothing on the stop signal when its client goes away", async () => {
    const up = upstream();
    const stop = new AbortController();
    const stream = endAtFrameOnce(up.body, stop.signal);
    const reader = stream.getReader();
    up.push("id: 1\nevent: a\ndata: {}\n\n");
    await reader.read();
    await reader.cancel();
    expect(up.cancelled()).toBe(true);
    expect(getEventListeners(stop.signal, "abort")).toHaveLength(0);
  });

  it("ends between two frames once stopped: a frame cut in two is finished first, nothing after it is sent", async () => {
    const up = upstream();
    const stop = new AbortController();
    const out = readAll(endAtFrameOnce(up.body, stop.signal));
    up.push("id: 1\nevent: a\ndata: {}\n\n");
    up.push("id: 2\nevent: b\n");
    await new Promise((resolve) => setTimeout(resolve, 20));
    stop.abort();
    up.push("data: {}\n");
    up.push("\n");
    up.push("id: 3\nevent: c\ndata: {}\n\n");
    expect(await out).toBe("id: 1\nevent: a\ndata: {}\n\nid: 2\nevent: b\ndata: {}\n\n");
    expect(up.cancelled()).toBe(true);
  });

  it("ends at once when stopped while waiting between frames, and lets go of the owner's stream", async () => {
    const up = upstream();
    const stop = new AbortController();
    const out = readAll(endAtFrameOnce(up.body, stop.signal));
    up.push("id: 1\nevent: a\ndata: {}\n\n");
    await new Promise((resolve) => setTimeout(resolve, 20));
    stop.abort();
    expect(await out).toBe("id: 1\nevent: a\ndata: {}\n\n");
    expect(up.cancelled()).toBe(true);
  });
});
