import type { StoredEvent } from "../db/queries/events";
import type { EventLog } from "../sessions/event-log";

/** A `: ping` comment after this much silence keeps proxies from closing an idle stream (API.md). */
export const PING_EVERY_MS = 15_000;
/** The comment sent after PING_EVERY_MS of silence. */
export const PING_COMMENT = ": ping\n\n";
/** The comment an open stream starts with, so its headers go out before the first event. */
export const OPEN_COMMENT = ": open\n\n";
const encoder = new TextEncoder();

/** The headers of every event stream: not cached, not transformed, not buffered by a proxy. */
export const EVENT_STREAM_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  connection: "keep-alive",
  "x-accel-buffering": "no",
} as const;

/**
 * Waits for events past `cursor`; true when the wait ran a whole ping
 * interval with nothing new (the caller sends `: ping` and returns from pull).
 */
export async function waitOrPing(log: EventLog, cursor: number, pingEveryMs: number, signal?: AbortSignal): Promise<boolean> {
  const before = Date.now();
  await log.waitForMore(cursor, pingEveryMs, signal);
  return log.lastSeq <= cursor && !log.isClosed && !signal?.aborted && Date.now() - before >= pingEveryMs - 5;
}

function formatFrame(event: StoredEvent): string {
  return `id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event.data)}\n\n`;
}

/**
 * An event's frame as bytes, made once for every reader: the recent events of
 * a session are shared objects, and a busy session may have hundreds of readers.
 * Never changed once made (every stream sends the same bytes).
 */
const frameBytes = new WeakMap<StoredEvent, Uint8Array>();
function frameOf(event: StoredEvent): Uint8Array {
  let bytes = frameBytes.get(event);
  if (!bytes) {
    bytes = encoder.encode(formatFrame(event));
    frameBytes.set(event, bytes);
  }
  return bytes;
}

/**
 * A `text/event-stream` response that reads the session's event log from
 * `after` onwards. It is pulled: nothing is read from the log until the client
 * has taken the previous frames, so a slow reader never makes the server
 * buffer (its events wait in the database instead). A client that goes away
 * only stops its own stream; the turn goes on.
 */
export function eventStreamResponse(
  log: EventLog,
  after: number,
  /**
   * `open`: a `: open` comment at once, so the answer's headers go out before the first event (a client reading a quiet session knows it is connected).
   * `signal`: once aborted (the server is stopping), the stream sends what is stored and ends; its client reconnects elsewhere with Last-Event-ID.
   */
  options: { endAfterDone: boolean; signal?: AbortSignal; pingEveryMs?: number; open?: boolean },
): Response {
  const pingEveryMs = options.pingEveryMs ?? PING_EVERY_MS;
  let cursor = after;
  let finished = false;
  // While the stream is open the session keeps this log (see SessionManager.forgetLog).
  const detach = log.attach();
  const finish = () => {
    finished = true;
    detach();
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        if (options.open) controller.enqueue(encoder.encode(OPEN_COMMENT));
      },
      async pull(controller) {
        while (!finished) {
          const events = await log.read(cursor, 100);
          if (events.length > 0) {
            const parts: Uint8Array[] = [];
            let total = 0;
            for (const event of events) {
              const frame = frameOf(event);
              parts.push(frame);
              total += frame.length;
              cursor = event.seq;
              if (options.endAfterDone && event.type === "done") {
                finish();
                break;
              }
            }
            controller.enqueue(parts.length === 1 ? parts[0]! : Buffer.concat(parts, total));
            if (finished) controller.close();
            return;
          }
          if (log.isClosed || options.signal?.aborted) {
            finish();
            controller.close();
            return;
          }
          if (await waitOrPing(log, cursor, pingEveryMs, options.signal)) {
            controller.enqueue(encoder.encode(PING_COMMENT));
            return;
          }
        }
      },
      cancel() {
        finish();
      },
    },
    { highWaterMark: 1 },
  );
  return new Response(stream, { status: 200, headers: EVENT_STREAM_HEADERS });
}
