import { createHash, randomBytes, randomUUID } from "node:crypto";
import { Agent as HttpAgent, createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { isIP, type Socket } from "node:net";
import { addressProblem } from "../sandbox/egress-proxy";
import { UsageTap, type ModelUsage } from "./usage-tap";
import type { CloudUpstream } from "./cloud-credentials";
import { anthropicErrorOf, cloudCall, VertexTokens } from "./cloud-requests";
import { EventStreamToSse } from "./eventstream-sse";

/** Where a session's model calls really go, and with which key. */
/** A call refused because its (agent's or session's own) endpoint leads to an address it may not. */
class EndpointRefused extends Error {
  override name = "EndpointRefused";
}

/**
 * Resolves like the system does, but fails when any address of the name is
 * one a tenant's endpoint may not lead to: the check is on what is dialed,
 * so a name that resolves differently later cannot slip through.
 */
function guardedLookup(allowPrivate: boolean) {
  return (hostname: string, options: { all?: boolean; family?: number; hints?: number }, callback: (error: Error | null, address: string | LookupAddress[], family?: number) => void) => {
    dnsLookup(hostname, { family: options.family, hints: options.hints, all: true }, (error, addresses) => {
      if (error) return callback(error, "", 0);
      const problem = addresses.map((a) => addressProblem(a.address, allowPrivate)).find(Boolean);
      if (problem || addresses.length === 0) return callback(new EndpointRefused(problem ?? `${hostname} has no address`), "", 0);
      if (options.all) callback(null, addresses);
      else callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}

/** Why a tenant's model endpoint may not be called now (its name resolved and checked), or undefined. */
export async function tenantEndpointProblem(url: URL, allowPrivate: boolean): Promise<string | undefined> {
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (isIP(host)) return addressProblem(host, allowPrivate);
  return new Promise((resolve) =>
    guardedLookup(allowPrivate)(host, { all: true }, (error) => resolve(error instanceof EndpointRefused ? error.message : undefined)),
  );
}

export interface ModelUpstream {
  /** e.g. https://api.anthropic.com (a path prefix is kept). */
  baseUrl: string;
  apiKey?: string;
  authToken?: string;
  /** Names the key in usage records (never the key itself): "server", "agent", "session". */
  keyId: string;
  /** Bedrock or Vertex AI instead of the Messages API: calls are translated and signed here. */
  cloud?: CloudUpstream;
  /**
   * Set when the base URL is an agent's or session's own: calls then never go
   * to the host itself, link-local or metadata addresses, nor (unless
   * allowed, as for egress) private ones, checked on the address dialed.
   */
  tenantEndpoint?: { allowPrivate: boolean };
}

/** Whether calls through this upstream carry a key at all. */
export function hasModelKey(upstream: ModelUpstream): boolean {
  return Boolean(upstream.apiKey || upstream.authToken || upstream.cloud);
}

/**
 * The largest request body the gateway takes (the Messages API's own limit, images and documents
 * included). Bodies are read whole before they are sent: a cloud call is translated and signed, and
 * a call that meets a dead kept-alive connection can be sent again.
 */
const MAX_REQUEST_BODY = 32 * 1024 * 1024;

/** Errors of a kept-alive connection the upstream closed while idle, before it read the request. */
const STALE_CONNECTION = new Set(["ECONNRESET", "EPIPE", "ECONNABORTED"]);

/**
 * What one token stands for: one sandbox of one agent, bound to a session
 * (a warm spare's sandbox is bound when a session takes it). The token itself
 * is not kept, only its SHA-256.
 */
export interface GatewayGrant {
  readonly id: string;
  readonly sandboxId: string;
  readonly agentName: string;
  sessionId?: string;
  /** The turn running now, if any: usage is filed under it. */
  turnId?: string;
  readonly upstream: ModelUpstream;
  revoked: boolean;
  /**
   * Set while a warm spare primes its agent process: its model calls are
   * answered here with a short canned reply, never forwarded, never counted.
   */
  priming?: boolean;
}

/** An Anthropic-shaped refusal of a call before it is forwarded. */
export interface GatewayRefusal {
  status: number;
  type: string;
  message: string;
}

export interface GatewayHooks {
  /** Checked before every forwarded call (budgets); a refusal is answered and not forwarded. */
  admit?(grant: GatewayGrant): GatewayRefusal | undefined;
  /** One model response's usage, once it has ended. */
  usage?(grant: GatewayGrant, usage: ModelUsage, path: string): void;
  /** A call without a live token (or on another sandbox's socket). */
  rejected?(reason: "missing" | "unknown" | "wrong_sandbox"): void;
}

/**
 * What a token may call: the Messages API (and its token counter) and the model list. Nothing else
 * of the upstream API is reachable with the real key (no batches, which would escape budgets).
 */
const FORWARDED = [/^POST \/v1\/messages\/?$/, /^POST \/v1\/messages\/count_tokens\/?$/, /^GET \/v1\/models(\/[^/]+)?\/?$/];

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"]);

function hashToken(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

/** The answer for a call to a tenant's endpoint that leads where it may not (a 403 the CLI shows as it is). */
function refuseEndpoint(res: ServerResponse, problem: string): void {
  if (res.headersSent) return void res.destroy();
  anthropicError(res, 403, "permission_error", `The model gateway does not call this session's own ANTHROPIC_BASE_URL: ${problem}. An agent's or session's own endpoint must lead to a public address.`);
}

function anthropicError(res: ServerResponse, status: number, type: string, message: string): void {
  const body = JSON.stringify({ type: "error", error: { type, message } });
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/**
 * What a priming spare's calls get: the shape of a real answer ("ok", end of
 * turn), so the agent process runs its whole first-turn path once, with no
 * model call made and no token used.
 */
function primingAnswer(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  let size = 0;
  req.on("data", (chunk: Buffer) => {
    size += chunk.length;
    if (size <= 4 * 1024 * 1024) chunks.push(chunk);
  });
  req.on("end", () => {
    let body: { model?: string; stream?: boolean } = {};
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      // answered all the same
    }
    const json = (value: unknown) => {
      const text = JSON.stringify(value);
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    };
    if (/count_tokens/.test(req.url ?? "")) return json({ input_tokens: 1 });
    const usage = { input_tokens: 0, output_tokens: 1 };
    const message = { id: `msg_priming_${randomUUID().replace(/-/g, "")}`, type: "message", role: "assistant", model: body.model ?? "priming", content: [] as unknown[], stop_reason: null as string | null, stop_sequence: null, usage };
    if (!body.stream) return json({ ...message, content: [{ type: "text", text: "ok" }], stop_reason: "end_turn" });
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    send("message_start", { type: "message_start", message });
    send("content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } });
    send("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "ok" } });
    send("content_block_stop", { type: "content_block_stop", index: 0 });
    send("message_delta", { type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: 1 } });
    send("message_stop", { type: "message_stop" });
    res.end();
  });
}

/** A call's whole body, or undefined when it was too large (answered 413) or broke off (connection closed). */
async function readBody(req: IncomingMessage, res: ServerResponse, destination: string): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_REQUEST_BODY) {
        req.destroy();
        anthropicError(res, 413, "request_too_large", `The request is larger than the ${MAX_REQUEST_BODY / 2 ** 20} MiB the gateway sends to ${destination}.`);
        return undefined;
      }
      chunks.push(chunk);
    }
  } catch {
    res.destroy();
    return undefined;
  }
  return Buffer.concat(chunks);
}

/** The presented token: the key header the CLI sends (x-api-key), or a bearer token (ANTHROPIC_AUTH_TOKEN). */
function presentedToken(req: IncomingMessage): string | undefined {
  const key = req.headers["x-api-key"];
  if (typeof key === "string" && key) return key.trim();
  const auth = req.headers.authorization;
  const match = typeof auth === "string" ? /^Bearer\s+(\S+)\s*$/i.exec(auth) : null;
  return match?.[1];
}

/**
 * The model gateway: sandboxes call it with a per-sandbox token instead of a
 * real key; it checks the token (and that it came over that sandbox's own
 * socket), adds the real key, forwards the call and streams the answer back
 * chunk by chunk, reading the usage on the way.
 */
export class ModelGateway {
  private readonly grants = new Map<string, GatewayGrant>();
  /** Which sandbox a connection came in on (its own unix socket). */
  private readonly socketSandbox = new WeakMap<Socket, string>();
  private readonly server: Server;
  private readonly httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 256 });
  private readonly httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 256 });
  /** Connections to agents' and sessions' own endpoints: pooled apart, each made through the guarded lookup. */
  private readonly tenantHttpAgent = new HttpAgent({ keepAlive: true, maxSockets: 256 });
  private readonly tenantHttpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 256 });
  private readonly vertexTokens = new VertexTokens();
  hooks: GatewayHooks;

  constructor(hooks: GatewayHooks = {}) {
    this.hooks = hooks;
    this.server = createServer({ noDelay: true, keepAliveTimeout: 60_000 }, (req, res) => this.handle(req, res));
    this.server.on("clientError", (_error, socket) => socket.destroy());
  }

  /** Makes a token for a sandbox; the token is returned once and only its hash is kept. */
  issue(input: { sandboxId: string; agentName: string; sessionId?: string; upstream: ModelUpstream }): { token: string; grant: GatewayGrant } {
    const token = `ash-gw-${randomBytes(32).toString("base64url")}`;
    const grant: GatewayGrant = { id: randomUUID(), revoked: false, ...input };
    this.grants.set(hashToken(token).toString("hex"), grant);
    return { token, grant };
  }

  /** Ends a grant: its token is refused from now on. */
  revoke(grant: GatewayGrant): void {
    grant.revoked = true;
    for (const [hash, g] of this.grants) if (g === grant) this.grants.delete(hash);
  }

  /** Live grants (tests, /health). */
  get liveGrants(): number {
    return this.grants.size;
  }

  /** Grants bound to a session. */
  grantsOf(sessionId: string): GatewayGrant[] {
    return [...this.grants.values()].filter((g) => g.sessionId === sessionId);
  }

  /** A connection handler for one sandbox's gateway socket. */
  acceptFor(sandboxId: string): (socket: Socket) => void {
    return (socket) => {
      this.socketSandbox.set(socket, sandboxId);
      this.server.emit("connection", socket);
    };
  }

  /** Serves connections not tied to a sandbox (benchmarks): the token alone decides. */
  accept(socket: Socket): void {
    this.server.emit("connection", socket);
  }

  private lookup(token: string): GatewayGrant | undefined {
    // Looked up by hash: timing can tell at most something about a hash of a 256-bit random value.
    const grant = this.grants.get(hashToken(token).toString("hex"));
    return grant && !grant.revoked ? grant : undefined;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const token = presentedToken(req);
    const grant = token ? this.lookup(token) : undefined;
    const viaSandbox = this.socketSandbox.get(req.socket);
    if (!grant || (viaSandbox !== undefined && viaSandbox !== grant.sandboxId)) {
      this.hooks.rejected?.(!token ? "missing" : !grant ? "unknown" : "wrong_sandbox");
      req.resume();
      return anthropicError(res, 401, "authentication_error", "This gateway accepts only the live token of the session's own sandbox.");
    }
    const pathname = (req.url ?? "/").split("?")[0]!;
    if (!FORWARDED.some((route) => route.test(`${req.method} ${pathname}`))) {
      req.resume();
      return anthropicError(res, 404, "not_found_error", `The model gateway does not forward ${req.method} ${pathname}.`);
    }
    if (grant.priming && req.method === "POST") return primingAnswer(req, res);
    const refusal = this.hooks.admit?.(grant);
    if (refusal) {
      req.resume();
      return anthropicError(res, refusal.status, refusal.type, refusal.message);
    }
    this.forward(grant, req, res).catch((error: Error) => {
      if (!res.headersSent) anthropicError(res, 502, "api_error", `The model gateway could not send the call: ${error.message}`);
      else res.destroy();
    });
  }

  private async forward(grant: GatewayGrant, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (grant.upstream.cloud) return void this.forwardCloud(grant, grant.upstream.cloud, req, res);
    const base = new URL(grant.upstream.baseUrl);
    const path = base.pathname.replace(/\/+$/, "") + (req.url ?? "/");
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined || HOP_BY_HOP.has(name) || name === "x-api-key" || name === "authorization") continue;
      headers[name] = value;
    }
    headers.host = base.host;
    // Uncompressed, so the usage can be read as it passes.
    headers["accept-encoding"] = "identity";
    if (grant.upstream.apiKey) headers["x-api-key"] = grant.upstream.apiKey;
    else if (grant.upstream.authToken) headers.authorization = `Bearer ${grant.upstream.authToken}`;
    const body = await readBody(req, res, "the model API");
    if (!body) return;
    if (req.method !== "GET" || body.length) headers["content-length"] = String(body.length);
    this.send(base, req.method ?? "GET", path, headers, body, (answer) => {
      const out: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(answer.headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
      res.writeHead(answer.statusCode ?? 502, out);
      res.flushHeaders();
      this.relay(grant, req, res, answer);
    }, res, false, grant.upstream.tenantEndpoint);
  }

  /** Bedrock or Vertex AI: the whole call is read, translated and signed, then sent. */
  private async forwardCloud(grant: GatewayGrant, cloud: CloudUpstream, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req, res, cloud.kind);
    if (!body) return;
    const pathname = (req.url ?? "/").split("?")[0]!;
    const call = await cloudCall(cloud, this.vertexTokens, req.method ?? "GET", pathname, req.headers, body);
    if (!("url" in call)) return anthropicError(res, call.status, call.type, call.message);
    this.send(call.url, call.method, `${call.url.pathname}${call.url.search}`, { ...call.headers, host: call.url.host, "content-length": String(call.body.length), "accept-encoding": "identity" }, call.body, (answer) => {
      const status = answer.statusCode ?? 502;
      if (status >= 300) {
        // Cloud errors come in their own shapes; the CLI reads (and retries by) the Messages API's.
        const parts: Buffer[] = [];
        let kept = 0;
        answer.on("data", (chunk: Buffer) => {
          if (kept < 64 * 1024) parts.push(chunk);
          kept += chunk.length;
        });
        answer.on("end", () => {
          const error = anthropicErrorOf(status, Buffer.concat(parts).toString("utf8"), cloud.kind);
          const retryAfter = answer.headers["retry-after"];
          if (typeof retryAfter === "string" && !res.headersSent) res.setHeader("retry-after", retryAfter);
          anthropicError(res, status, error.type, error.message);
        });
        answer.on("error", () => res.destroy());
        return;
      }
      const eventStream = call.answer === "eventstream" && /amazon\.eventstream/i.test(String(answer.headers["content-type"] ?? ""));
      const contentType = eventStream ? "text/event-stream" : String(answer.headers["content-type"] ?? "application/json");
      res.writeHead(status, { "content-type": contentType, "cache-control": "no-cache" });
      res.flushHeaders();
      this.relay(grant, req, res, answer, eventStream ? new EventStreamToSse() : undefined);
    }, res);
  }

  /**
   * Sends a call upstream; a connection failure is answered in the Messages API's shape. A kept-alive
   * connection the upstream closed as idle just as the call went out (a reset before any answer) is
   * not the model failing: the call goes again once, on a new connection.
   */
  private send(
    base: URL,
    method: string,
    path: string,
    headers: Record<string, string | string[]>,
    body: Buffer,
    onAnswer: (answer: IncomingMessage) => void,
    res: ServerResponse,
    fresh = false,
    tenant?: { allowPrivate: boolean },
  ): void {
    const https = base.protocol === "https:";
    const hostname = base.hostname.replace(/^\[(.*)\]$/, "$1");
    if (tenant && isIP(hostname)) {
      // An address given as such is never looked up: checked here.
      const problem = addressProblem(hostname, tenant.allowPrivate);
      if (problem) return refuseEndpoint(res, problem);
    }
    let answered = false;
    const request = (https ? httpsRequest : httpRequest)(
      {
        protocol: base.protocol,
        hostname,
        port: base.port || (https ? 443 : 80),
        method,
        path,
        headers,
        // agent: false opens a connection of its own.
        agent: fresh ? false : tenant ? (https ? this.tenantHttpsAgent : this.tenantHttpAgent) : https ? this.httpsAgent : this.httpAgent,
        ...(tenant ? { lookup: guardedLookup(tenant.allowPrivate) as never } : {}),
      },
      (answer) => {
        answered = true;
        onAnswer(answer);
      },
    );
    request.setNoDelay?.(true);
    request.on("error", (error) => {
      if (error instanceof EndpointRefused) return refuseEndpoint(res, error.message);
      const code = (error as NodeJS.ErrnoException).code;
      if (!answered && !fresh && request.reusedSocket && code && STALE_CONNECTION.has(code) && !res.destroyed) {
        return this.send(base, method, path, headers, body, onAnswer, res, true, tenant);
      }
      if (!res.headersSent) anthropicError(res, 502, "api_error", `The model gateway could not reach the model API: ${code ?? error.message}`);
      else res.destroy();
    });
    // The caller went away: so does its call.
    res.once("close", () => {
      if (!answered) request.destroy();
    });
    request.end(body);
  }

  /** Streams an answer back chunk by chunk (converted first when it needs to be), reading the usage on the way. */
  private relay(grant: GatewayGrant, req: IncomingMessage, res: ServerResponse, answer: IncomingMessage, convert?: EventStreamToSse): void {
    const isMessages = req.method === "POST" && /\/v1\/messages\/?(\?.*)?$/.test(req.url ?? "");
    const streaming = Boolean(convert) || /text\/event-stream/i.test(String(answer.headers["content-type"] ?? ""));
    const tap = isMessages && (answer.statusCode ?? 500) < 300 ? new UsageTap(streaming, "unknown") : undefined;
    let reported = false;
    const report = () => {
      if (!tap || reported) return;
      reported = true;
      const usage = tap.finish();
      if (tap.found) this.hooks.usage?.(grant, usage, req.url ?? "/");
    };
    const write = (chunk: Buffer) => {
      if (chunk.length === 0) return;
      if (!res.write(chunk)) {
        answer.pause();
        res.once("drain", () => answer.resume());
      }
      tap?.push(chunk);
    };
    // Written on first, then read: the tap never holds a chunk back.
    answer.on("data", (chunk: Buffer) => write(convert ? Buffer.from(convert.push(chunk)) : chunk));
    answer.on("end", () => {
      if (convert) write(Buffer.from(convert.end()));
      report();
      res.end();
    });
    answer.on("error", () => {
      report();
      res.destroy();
    });
    res.on("close", () => {
      if (!answer.complete) {
        report();
        answer.destroy();
      }
    });
  }

  close(): void {
    this.server.close();
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}
