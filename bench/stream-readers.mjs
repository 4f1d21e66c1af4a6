// Readers of one session's event stream, in a worker thread of their own, so
// parsing hundreds of streams does not hold up the fake model (which timestamps
// each text piece) in the benchmark's main thread. Both use Date.now().
//
// workerData: { url, apiKey, sessionId, readers, seq }. Posts "open" once every
// stream's headers came, then { results: [{ texts, frames, replayed }] } once each saw `done`.
import { parentPort, workerData } from "node:worker_threads";
import { readArrivals } from "./sse-arrivals.mjs";

const { url, apiKey, sessionId, readers, seq } = workerData;

const streams = await Promise.all(
  Array.from({ length: readers }, () => fetch(`${url}/api/sessions/${sessionId}/stream?after=0`, { headers: { authorization: `Bearer ${apiKey}` } })),
);
for (const response of streams) if (response.status !== 200) throw new Error(`stream answered ${response.status}`);
// Only text pieces after event `seq` (the live turn) count; the replayed history is counted apart.
const reading = streams.map((response) => readArrivals(response, seq));
parentPort.postMessage("open");
parentPort.postMessage({ results: await Promise.all(reading) });
