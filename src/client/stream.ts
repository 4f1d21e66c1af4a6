import { AshApiError, AshConnectionError, AshStreamError, networkErrorCode } from "./errors";
import { isStreamEventType, parseEventId, type StreamEvent } from "./events";
import { readSseFrames, type SseFrame } from "./sse";
import type { ReconnectOptions } from "./types";

/** How a resumable stream opens its connections. */
export interface StreamSource {
  /** The first connection (the `POST` of a message, or a `GET …/stream`). */
  open(signal: AbortSignal | undefined): Promise<Response>;
  /** A later connection that continues after the event with id `lastEventId`. */
  reopen(lastEventId: number, signal: AbortSignal | undefined): Promise<Response>;
}

export interface ResumableStreamOptions {
  /** Stop after the first `done` event (one turn) instead of following the session. */
  untilDone: boolean;
  /** Resume after this id on the first connection too (events up to it are not yielded). */
  lastEventId?: number;
  signal?: AbortSignal;
  reconnect?: ReconnectOptions;
}

const DEFAULTS = { retries: 5, initialDelayMs: 250, maxDelayMs: 5000 };

/**
 * Yields typed events from a server-sent event stream and, when the connection drops before
 * the end, reconnects with `Last-Event-ID` and carries on. Events are yielded at most once:
 * anything at or below the last id already yielded is skipped, whatever the server resends.
 * Only failures in a row without a new event count against `retries`, so a long turn that
 * keeps making progress can survive several drops.
 */
export async function* resumableEvents(source: StreamSource, options: ResumableStreamOptions): AsyncGenerator<StreamEvent> {
  const retries = Math.max(0, options.reconnect?.retries ?? DEFAULTS.retries);
  const initialDelay = Math.max(0, options.reconnect?.initialDelayMs ?? DEFAULTS.initialDelayMs);
  const maxDelay = Math.max(initialDelay, options.reconnect?.maxDelayMs ?? DEFAULTS.maxDelayMs);
  const { signal, untilDone } = options;

  let lastId = options.lastEventId;
  let serverRetryMs: number | undefined;
  let failures = 0;
  let lastFailure: unknown;

  let response: Response | undefined = await source.open(signal);

  for (;;) {
    if (!response) {
      if (lastId === undefined) {
        throw new AshStreamError("The event stream broke before its first event, so it cannot be resumed.", undefined, lastFailure);
      }
      if (failures > retries) {
        const tried = retries === 0 ? "reconnecting is turned off" : `${retries} reconnect attempt${retries === 1 ? "" : "s"} failed`;
        throw new AshStreamError(`The event stream broke and ${tried}; the last event received was ${lastId}.`, lastId, lastFailure);
      }
      const backoff = Math.min(maxDelay, (serverRetryMs ?? initialDelay) * 2 ** (failures - 1));
      await sleep(backoff, signal);
      try {
        response = await source.reopen(lastId, signal);
      } catch (error) {
        if (!isRetryable(error) || signal?.aborted) throw abortReason(signal) ?? error;
        lastFailure = error;
        failures++;
        continue;
      }
    }

    try {
      if (!response.body) throw new AshStreamError("The server answered without an event stream.", lastId);
      const frames = readSseFrames(response.body, { onRetry: (ms) => (serverRetryMs = ms) });
      for await (const frame of frames) {
        const id = parseEventId(frame.id);
        if (id !== undefined) {
          if (lastId !== undefined && id <= lastId) continue;
          lastId = id;
          failures = 0;
        }
        const event = toStreamEvent(frame, id ?? lastId ?? 0);
        if (!event) continue;
        yield event;
        if (untilDone && event.type === "done") return;
      }
      // A clean end: fine for a follow stream, but a turn always ends with `done`.
      if (!untilDone) return;
      lastFailure = new Error("The server closed the stream before the turn's `done` event.");
    } catch (error) {
      if (signal?.aborted) throw abortReason(signal);
      if (!isRetryable(error)) throw error;
      lastFailure = error;
    }
    response = undefined;
    failures++;
  }
}

/** Turns a frame into a typed event; frames of unknown types or with bad JSON are skipped. */
export function toStreamEvent(frame: SseFrame, id: number): StreamEvent | undefined {
  if (!isStreamEventType(frame.event)) return undefined;
  let data: unknown;
  try {
    data = JSON.parse(frame.data);
  } catch {
    return undefined;
  }
  if (data === null || typeof data !== "object") return undefined;
  return { type: frame.event, id, data } as StreamEvent;
}

/** Transport failures and server-side hiccups are worth another try; a 4xx answer is not. */
function isRetryable(error: unknown): boolean {
  if (error instanceof AshConnectionError) return true;
  if (error instanceof AshApiError) return error.statusCode >= 500 || error.statusCode === 429;
  if (error instanceof AshStreamError) return false;
  return networkErrorCode(error) !== undefined;
}

function abortReason(signal: AbortSignal | undefined): unknown {
  if (!signal?.aborted) return undefined;
  return signal.reason ?? new DOMException("This operation was aborted", "AbortError");
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
