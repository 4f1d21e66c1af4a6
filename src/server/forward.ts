import type { H3Event } from "h3";
import { z } from "zod";
import { FORWARD_HEADERS, signForward, verifyForward } from "../cluster/signing";
import type { LeaseRecord } from "../cluster/leases";
import { SCOPES } from "../db/queries/api-keys";
import type { AppContext } from "./context";
import { principalOf, type Principal } from "./auth";
import { unavailable } from "./errors";
import { getSession } from "../db/queries/sessions";

/** Routes about one session: answered by the server that runs it (docs/decisions/cluster-leases.md). */
const SESSION_ROUTE = /^\/(?:api|v1)\/sessions\/:id(?:\/|$)/;

/** Headers that belong to one connection, never passed on (RFC 9110 7.6.1), and the caller's keys. */
// `expect` too: fetch() refuses it (a client's `Expect: 100-continue` is answered by this server already).
const NOT_PASSED_ON = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "expect", "host", "authorization", "x-api-key", FORWARD_HEADERS.identity, FORWARD_HEADERS.signature, FORWARD_HEADERS.server]);
/** Failures of the hop itself (the other server is gone or unreachable), answered 503; anything else is a bug (500). */
const UNREACHABLE = new Set(["ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN", "UND_ERR_SOCKET", "UND_ERR_CONNECT_TIMEOUT", "UND_ERR_CLOSED", "UND_ERR_HEADERS_TIMEOUT"]);
/** fetch() decodes bodies, so a length or encoding from upstream would be wrong here. */
const NOT_PASSED_BACK = new Set(["connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"]);

/** Routes that make a session: placed here unless this server is full or draining. */
const CREATES_SESSION = new Set(["POST /api/sessions", "POST /v1/sessions"]);

/** The header saying which server answered a request this one passed on. */
export const FORWARDED_TO_HEADER = "x-ash-forwarded-to";

declare module "h3" {
  interface H3EventContext {
    /** Set on a request another server passed on: it is never passed on again. */
    forwarded?: boolean;
  }
}

const limitsShape = z.object({ requestsPerMinute: z.number().optional(), liveSessions: z.number().optional(), runningTurns: z.number().optional(), tokensPerDay: z.number().optional() });
const principalShape = z.object({ keyId: z.string(), tenantId: z.string(), scope: z.enum(SCOPES), operator: z.boolean(), limits: limitsShape, tenantLimits: limitsShape });

/**
 * The caller of a request another server passed on, when its signature holds;
 * otherwise the reason it is refused. Undefined when the request was not passed on.
 */
export function forwardedPrincipal(ctx: AppContext, event: H3Event): { principal: Principal } | { refused: string } | { misdirected: string } | undefined {
  const headers = event.req.headers;
  if (!headers.has(FORWARD_HEADERS.signature) && !headers.has(FORWARD_HEADERS.identity)) return undefined;
  const verdict = verifyForward(ctx.config.cluster.secret, { method: event.req.method, target: event.url.pathname + event.url.search, serverId: ctx.sessions.leases.serverId }, headers);
  if (!verdict.ok) return verdict.misdirected ? { misdirected: verdict.why } : { refused: verdict.why };
  const principal = principalShape.safeParse(verdict.caller);
  if (!principal.success) return { refused: "the forwarded request's identity has the wrong shape" };
  return { principal: principal.data as Principal };
}

/**
 * Passes a request about a session that another server runs to that server,
 * streaming the body both ways (an SSE stream stays a stream). A request that
 * was passed on already is answered here, whatever the lease says, so two
 * servers that disagree for a moment never pass one request back and forth.
 */
export function forwarding(ctx: AppContext) {
  return async (event: H3Event): Promise<Response | undefined> => {
    if (event.context.forwarded) return undefined;
    const route = event.context.matchedRoute?.route;
    if (route && CREATES_SESSION.has(`${event.req.method} ${route}`)) return place(ctx, event);
    if (!route || !SESSION_ROUTE.test(route)) return undefined;
    const id = event.context.params?.id;
    // Without the secret, servers do not pass requests on: reads are answered here from the
    // database, and what needs the live agent is refused by the lease (503, try again).
    if (!id || !ctx.config.cluster.secret) return undefined;
    const owner = await ctx.sessions.leases.ownerElsewhere(id);
    if (!owner) return undefined;
    // Another tenant's session is not passed on (nor said to be live): its route answers 404 here.
    if (route.startsWith("/v1/") && (await getSession(ctx.db, id))?.tenantId !== principalOf(event).tenantId) return undefined;
    return forward(ctx, event, owner);
  };
}

/**
 * A new session starts on the server that received it, unless that one is
 * full (it would have to evict a session) or draining; then on the least
 * loaded live server with room, by the heartbeats. With none, it stays here
 * (evicting an idle session, or answering 503).
 */
async function place(ctx: AppContext, event: H3Event): Promise<Response | undefined> {
  if (!ctx.config.cluster.secret) return undefined;
  if (!ctx.drain.draining && ctx.sessions.pool.hasRoom) return undefined;
  const target = await ctx.sessions.leases.roomElsewhere();
  if (!target) return undefined;
  return forward(ctx, event, { serverId: target.id, address: target.address, expiresAt: target.expiresAt });
}

/** Where a request goes: the server's id, its address, and until when its lease or heartbeat holds. */
type Destination = Pick<LeaseRecord, "serverId" | "address" | "expiresAt">;

/** Seconds until the destination's lease (or heartbeat) has run out and its sessions can move: a Retry-After. */
function secondsUntilGone(owner: Destination): number {
  return Math.max(1, Math.ceil((owner.expiresAt - Date.now()) / 1000) + 1);
}

/** Only called with ASH_CLUSTER_SECRET set. */
async function forward(ctx: AppContext, event: H3Event, owner: Destination): Promise<Response> {
  const secret = ctx.config.cluster.secret!;
  const where = `server ${owner.serverId} at ${owner.address}`;
  const method = event.req.method;
  const target = event.url.pathname + event.url.search;
  const headers = new Headers();
  // Headers the client named in Connection belong to its connection with this server only.
  const named = new Set((event.req.headers.get("connection") ?? "").split(",").map((t) => t.trim().toLowerCase()));
  for (const [name, value] of event.req.headers) if (!NOT_PASSED_ON.has(name.toLowerCase()) && !named.has(name.toLowerCase())) headers.append(name, value);
  for (const [name, value] of Object.entries(signForward(secret, { method, target, serverId: owner.serverId }, principalOf(event)))) headers.set(name, value);
  const hasBody = method !== "GET" && method !== "HEAD";
  let upstream: Response;
  try {
    upstream = await fetch(new URL(target, owner.address), {
      method,
      headers,
      body: hasBody ? event.req.body : undefined,
      redirect: "manual",
      signal: event.req.signal,
      // A streamed request body (uploads) goes on as it arrives.
      ...(hasBody ? { duplex: "half" } : {}),
    } as RequestInit);
  } catch (error) {
    if (event.req.signal?.aborted || !UNREACHABLE.has(String((error as any)?.cause?.code ?? (error as any)?.code))) throw error;
    const wait = secondsUntilGone(owner);
    ctx.log.warn(`passing ${method} ${event.url.pathname} on to ${where} failed:`, error instanceof Error ? (error.cause ?? error).toString() : error);
    throw unavailable(`The server this request is for (${where}) does not answer; send it again in ${wait} s (a server that is gone leaves its sessions to the others by then).`, wait);
  }
  // Another server answers at that address now (a dead server's address given to a new one): the lease is stale.
  if (upstream.status === 421) {
    await upstream.body?.cancel().catch(() => undefined);
    const wait = secondsUntilGone(owner);
    throw unavailable(`The server this request is for (${where}) is gone and another one answers at its address; send it again in ${wait} s.`, wait);
  }
  const back = new Headers();
  for (const [name, value] of upstream.headers) if (!NOT_PASSED_BACK.has(name.toLowerCase())) back.append(name, value);
  back.set(FORWARDED_TO_HEADER, owner.serverId);
  const stream = upstream.body && /^text\/event-stream/i.test(upstream.headers.get("content-type") ?? "");
  const body = stream ? endAtFrameOnce(upstream.body!, ctx.drain.streamsEnd) : upstream.body;
  return new Response(body, { status: upstream.status, statusText: upstream.statusText, headers: back });
}

/**
 * An event stream passed on from its owner, ended by this server once `stop`
 * is aborted (it is shutting down), between two frames: its client has every
 * frame it got whole and reconnects with Last-Event-ID elsewhere, instead of
 * having the connection cut mid-frame when this server closes it.
 */
export function endAtFrameOnce(body: ReadableStream<Uint8Array>, stop: AbortSignal): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  // The last two bytes passed on: "\n\n" ends a frame (and a ": ping" comment).
  let tail = "\n\n";
  let pending: ReturnType<typeof reader.read> | undefined;
  let onStop: (() => void) | undefined;
  const stopped = new Promise<"stop">((resolve) => {
    onStop = () => resolve("stop");
    if (stop.aborted) onStop();
    else stop.addEventListener("abort", onStop, { once: true });
  });
  // The stop signal lives as long as the server: a stream that ended takes its listener along.
  const letGo = () => stop.removeEventListener("abort", onStop!);
  const end = (controller: ReadableStreamDefaultController<Uint8Array>) => {
    letGo();
    controller.close();
    void reader.cancel().catch(() => undefined);
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const between = tail === "\n\n";
        if (between && stop.aborted) return end(controller);
        pending ??= reader.read();
        // Mid-frame the rest of the frame is awaited whatever happens; between frames a stop ends it.
        const got = between ? await Promise.race([pending, stopped]) : await pending;
        if (got === "stop") return end(controller);
        pending = undefined;
        if (got.done) {
          letGo();
          return controller.close();
        }
        const chunk = got.value;
        controller.enqueue(chunk);
        if (chunk.length >= 2) tail = String.fromCharCode(chunk[chunk.length - 2]!, chunk[chunk.length - 1]!);
        else if (chunk.length === 1) tail = tail.slice(-1) + String.fromCharCode(chunk[0]!);
      },
      cancel(reason) {
        letGo();
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
