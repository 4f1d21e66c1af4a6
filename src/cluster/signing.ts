import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * A request one server passes to another carries who the caller is, signed
 * with the cluster secret (ASH_CLUSTER_SECRET), instead of the caller's key:
 * the receiving server trusts the identity because only servers know the
 * secret. The signature covers the time, the method, the path with its query,
 * the receiving server and the identity, so it cannot be moved to another
 * request, another server or another caller, and is stale after a minute.
 */
export const FORWARD_HEADERS = {
  /** base64url JSON of the caller as the first server authenticated it. */
  identity: "x-ash-forwarded-identity",
  /** `v1.<unix ms>.<hex HMAC-SHA256>` */
  signature: "x-ash-forwarded-signature",
  /** The server id it is meant for, in the clear: another server at that address answers 421, not 401. */
  server: "x-ash-forwarded-server",
} as const;

/** Older (or more future) signatures are refused: a captured one is useless after this. */
export const FORWARD_MAX_SKEW_MS = 60_000;

export interface SignedRequest {
  method: string;
  /** Path and query, as sent. */
  target: string;
  /** The server the request is for (its id): a signature for one server does not open another. */
  serverId: string;
}

function mac(secret: string, at: number, request: SignedRequest, identity: string): Buffer {
  return createHmac("sha256", secret).update(["v1", String(at), request.method.toUpperCase(), request.target, request.serverId, identity].join("\n")).digest();
}

/** The two headers that pass `caller` on to `request.serverId`. */
export function signForward(secret: string, request: SignedRequest, caller: unknown, now = Date.now()): Record<string, string> {
  const identity = Buffer.from(JSON.stringify(caller), "utf8").toString("base64url");
  return {
    [FORWARD_HEADERS.identity]: identity,
    [FORWARD_HEADERS.signature]: `v1.${now}.${mac(secret, now, request, identity).toString("hex")}`,
    [FORWARD_HEADERS.server]: request.serverId,
  };
}

/**
 * The caller a forwarded request carries, or a sentence saying why it is
 * refused (no secret here, malformed, stale, wrong signature).
 */
export function verifyForward(
  secret: string | undefined,
  request: SignedRequest,
  headers: { get(name: string): string | null },
  now = Date.now(),
): { ok: true; caller: unknown } | { ok: false; why: string; misdirected?: boolean } {
  if (!secret) return { ok: false, why: "this server has no ASH_CLUSTER_SECRET, so it accepts no forwarded request" };
  const identity = headers.get(FORWARD_HEADERS.identity);
  const signature = headers.get(FORWARD_HEADERS.signature);
  const match = signature ? /^v1\.(\d{1,16})\.([0-9a-f]{64})$/.exec(signature) : null;
  if (!identity || !match || !/^[A-Za-z0-9_-]{1,8192}$/.test(identity)) return { ok: false, why: "the forwarded request's signature headers are malformed" };
  const meantFor = headers.get(FORWARD_HEADERS.server);
  if (meantFor !== null && meantFor !== request.serverId) return { ok: false, why: "the forwarded request was meant for another server", misdirected: true };
  const at = Number(match[1]);
  if (Math.abs(now - at) > FORWARD_MAX_SKEW_MS) return { ok: false, why: "the forwarded request's signature is stale (are the servers' clocks in step?)" };
  const expected = mac(secret, at, request, identity);
  const given = Buffer.from(match[2]!, "hex");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, why: "the forwarded request's signature does not match (is ASH_CLUSTER_SECRET the same on every server?)" };
  try {
    return { ok: true, caller: JSON.parse(Buffer.from(identity, "base64url").toString("utf8")) };
  } catch {
    return { ok: false, why: "the forwarded request's identity is not JSON" };
  }
}
