// Readers of one session's event stream, in a worker thread of their own, so
// parsing hundreds of streams does not hold up the fake model (which timestamps
// each text piece) in the benchmark's main thread. Both use Date.now().
//
// workerData: { url, apiKey, sessionId, readers, seq }. Posts "open" once every
// stream's headers came, then { results: [{ texts, replayed }] } once each saw `done`.
import { parentPort, workerData } from "node:worker_threads";

const { url, apiKey, sessionId, readers, seq } = workerData;

/** Counts only text_delta frames after event `seq` (the live turn) and ends at its `done`. */
async function readAfter(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const texts = [];
  let replayed = 0;
  let pending = "";
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
    const now = Date.now();
    pending += decoder.decode(chunk.value, { stream: true });
    const blocks = pending.split("\n\n");
    pending = blocks.pop() ?? "";
    for (const block of blocks) {
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const id = Number(/^id: (\d+)$/m.exec(block)?.[1] ?? NaN);
      if (!event) continue;
      if (!(id > seq)) {
        replayed++;
        continue;
      }
      if (event === "text_delta") texts.push(now);
      if (event === "done") {
        await reader.cancel().catch(() => undefined);
        return { texts, replayed };
      }
    }
  }
  return { texts, replayed };
}

const streams = await Promise.all(
  Array.from({ length: readers }, () => fetch(`${url}/api/sessions/${sessionId}/stream?after=0`, { headers: { authorization: `Bearer ${apiKey}` } })),
);
for (const response of streams) if (response.status !== 200) throw new Error(`stream answered ${response.status}`);
const reading = streams.map(readAfter);
parentPort.postMessage("open");
parentPort.postMessage({ results: await Promise.all(reading) });
