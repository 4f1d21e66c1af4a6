// When each text piece of an SSE response arrived (Date.now()), read until its `done`.
// Shared by the streams bench's main thread and its readers' worker thread.

/**
 * Reads `response` until a `done` frame. With `after`, frames of event ids up to
 * it are only counted as replayed; without it, every frame counts.
 */
export async function readArrivals(response, after) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const texts = [];
  let frames = 0;
  let replayed = 0;
  let pending = "";
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
    const now = Date.now();
    pending += decoder.decode(chunk.value, { stream: true });
    const blocks = pending.split("\n\n");
    pending = blocks.pop() ?? "";
    for (const block of blocks) {
      const event = /^event: (.*)$/m.exec(block)?.[1];
      if (!event) continue;
      if (after !== undefined && !(Number(/^id: (\d+)$/m.exec(block)?.[1] ?? NaN) > after)) {
        replayed++;
        continue;
      }
      frames++;
      if (event === "text_delta") texts.push(now);
      if (event === "done") {
        await reader.cancel().catch(() => undefined);
        return { texts, frames, replayed };
      }
    }
  }
  return { texts, frames, replayed };
}
