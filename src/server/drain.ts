import type { H3Event } from "h3";
import { setMaxListeners } from "node:events";
import { shuttingDown } from "./errors";

/**
 * A server that is shutting down (SIGTERM: a rolling update, a scale-down)
 * finishes what runs and starts nothing new: requests that would start a
 * sandbox or a turn are answered 503 with Retry-After, so a client or load
 * balancer sends them again to a server that stays. Reads, pauses, stops
 * and interrupts are still served.
 */
export class Drain {
  private since: number | undefined;
  private readonly streams = abortControllerForMany();

  get draining(): boolean {
    return this.since !== undefined;
  }

  begin(): void {
    this.since ??= Date.now();
  }

  /**
   * Aborted once the sessions are put away: an open event stream then sends
   * what is stored and ends, so its client reconnects (Last-Event-ID) to a
   * server that stays instead of being cut off when the connections are closed.
   */
  get streamsEnd(): AbortSignal {
    return this.streams.signal;
  }

  endStreams(): void {
    this.streams.abort();
  }
}

/** Routes that start a sandbox, a turn or a run. */
const STARTS_WORK = new Set([
  "POST /api/sessions",
  "POST /api/sessions/:id/messages",
  "POST /api/sessions/:id/resume",
  "POST /api/sessions/:id/fork",
  "POST /api/sessions/:id/rewind",
  "POST /api/sessions/:id/exec",
  "POST /api/agents/:name/evals/runs",
  "POST /v1/sessions",
  "POST /v1/sessions/:id/events",
]);

export function drainGate(drain: Drain) {
  return (event: H3Event) => {
    if (!drain.draining) return;
    const route = event.context.matchedRoute?.route;
    if (route && STARTS_WORK.has(`${event.req.method} ${route}`)) {
      throw shuttingDown();
    }
  };
}

/** Every open event stream waits on this signal: as many listeners as streams, none of them a leak. */
function abortControllerForMany(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}
