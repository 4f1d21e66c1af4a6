import { createSign } from "node:crypto";
import { AwsV4Signer } from "aws4fetch";
import { bedrockModelId, vertexModelId, type CloudUpstream, type VertexCredential } from "./cloud-credentials";

/** One call to Bedrock or Vertex AI, made from a Messages API call. */
export interface CloudCall {
  url: URL;
  method: string;
  headers: Record<string, string>;
  body: Buffer;
  /** How the answer comes back: Bedrock's binary event stream is turned into SSE. */
  answer: "eventstream" | "as-is";
}

/** A call the gateway answers itself, in the Messages API's error shape. */
export interface CloudRefusal {
  status: number;
  type: string;
  message: string;
}

const BEDROCK_VERSION = "bedrock-2023-05-31";
const VERTEX_VERSION = "vertex-2023-10-16";
const GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token";
const GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform";

/**
 * Builds the cloud call for `POST /v1/messages` (and Vertex's token counter);
 * the rest of the Messages API has no counterpart there and is refused.
 */
export async function cloudCall(upstream: CloudUpstream, tokens: VertexTokens, method: string, pathname: string, headers: Record<string, string | string[] | undefined>, raw: Buffer): Promise<CloudCall | CloudRefusal> {
  const counting = /^\/v1\/messages\/count_tokens\/?$/.test(pathname);
  if (method !== "POST" || !(counting || /^\/v1\/messages\/?$/.test(pathname))) {
    return { status: 404, type: "not_found_error", message: `${method} ${pathname} has no ${upstream.kind} counterpart behind this gateway.` };
  }
  if (counting && upstream.kind === "bedrock") return { status: 404, type: "not_found_error", message: "Token counting is not offered for Bedrock credentials." };
  let body: Record<string, unknown>;
  try {
    const parsed = JSON.parse(raw.toString("utf8")) as unknown;
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
    body = parsed as Record<string, unknown>;
  } catch {
    return { status: 400, type: "invalid_request_error", message: "The request body is not a JSON object." };
  }
  const { model, stream, ...rest } = body;
  if (typeof model !== "string" || !model) return { status: 400, type: "invalid_request_error", message: "model: field required" };
  const betas = String(headers["anthropic-beta"] ?? "")
    .split(",")
    .map((b) => b.trim())
    .filter(Boolean);

  if (upstream.kind === "bedrock") {
    const c = upstream.credential;
    const base = c.endpoint ?? `https://bedrock-runtime.${c.region}.amazonaws.com`;
    const url = new URL(`${base.replace(/\/+$/, "")}/model/${encodeURIComponent(bedrockModelId(c, model))}/${stream ? "invoke-with-response-stream" : "invoke"}`);
    const payload = Buffer.from(JSON.stringify({ ...rest, anthropic_version: BEDROCK_VERSION, ...(betas.length ? { anthropic_beta: betas } : {}) }));
    const plain: Record<string, string> = { "content-type": "application/json", accept: stream ? "application/vnd.amazon.eventstream" : "application/json" };
    if (c.apiKey) return { url, method: "POST", headers: { ...plain, authorization: `Bearer ${c.apiKey}` }, body: payload, answer: stream ? "eventstream" : "as-is" };
    const signed = await new AwsV4Signer({
      url: url.toString(),
      method: "POST",
      headers: plain,
      body: payload,
      accessKeyId: c.accessKeyId!,
      secretAccessKey: c.secretAccessKey!,
      sessionToken: c.sessionToken,
      service: "bedrock",
      region: c.region,
    }).sign();
    const out: Record<string, string> = {};
    signed.headers.forEach((value, name) => (out[name] = value));
    return { url, method: "POST", headers: out, body: payload, answer: stream ? "eventstream" : "as-is" };
  }

  const c = upstream.credential;
  const host = c.endpoint ?? (c.region === "global" ? "https://aiplatform.googleapis.com" : `https://${c.region}-aiplatform.googleapis.com`);
  const models = `${host.replace(/\/+$/, "")}/v1/projects/${encodeURIComponent(upstream.projectId)}/locations/${c.region}/publishers/anthropic/models`;
  const url = counting ? new URL(`${models}/count-tokens:rawPredict`) : new URL(`${models}/${encodeURIComponent(vertexModelId(c, model))}:${stream ? "streamRawPredict" : "rawPredict"}`);
  const payload = Buffer.from(JSON.stringify(counting ? { ...rest, model: vertexModelId(c, model), anthropic_version: VERTEX_VERSION } : { ...rest, ...(stream ? { stream } : {}), anthropic_version: VERTEX_VERSION }));
  let token: string;
  try {
    token = await tokens.get(upstream.cacheKey, c);
  } catch (error) {
    return { status: 401, type: "authentication_error", message: `The Vertex AI service account could not get an access token: ${error instanceof Error ? error.message : String(error)}` };
  }
  return {
    url,
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}`, ...(betas.length ? { "anthropic-beta": betas.join(",") } : {}) },
    body: payload,
    answer: "as-is",
  };
}

/**
 * Access tokens of Vertex AI service accounts: a signed JWT exchanged at the
 * token endpoint, kept until five minutes before it expires; one exchange at
 * a time per credential.
 */
export class VertexTokens {
  private readonly cache = new Map<string, { token: string; expiresAt: number } | Promise<{ token: string; expiresAt: number }>>();

  constructor(private readonly fetchImpl: typeof fetch = fetch) {}

  async get(key: string, credential: VertexCredential): Promise<string> {
    const held = this.cache.get(key);
    if (held && !(held instanceof Promise) && held.expiresAt - 5 * 60_000 > Date.now()) return held.token;
    if (held instanceof Promise) return (await held).token;
    const pending = this.exchange(credential);
    this.cache.set(key, pending);
    try {
      const got = await pending;
      this.cache.set(key, got);
      return got.token;
    } catch (error) {
      this.cache.delete(key);
      throw error;
    }
  }

  private async exchange(credential: VertexCredential): Promise<{ token: string; expiresAt: number }> {
    const endpoint = credential.tokenEndpoint ?? GOOGLE_TOKEN_ENDPOINT;
    const now = Math.floor(Date.now() / 1000);
    const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const unsigned = `${part({ alg: "RS256", typ: "JWT" })}.${part({ iss: credential.serviceAccount.client_email, scope: GOOGLE_SCOPE, aud: endpoint, iat: now, exp: now + 3600 })}`;
    let signature: string;
    try {
      signature = createSign("RSA-SHA256").update(unsigned).sign(credential.serviceAccount.private_key).toString("base64url");
    } catch {
      throw new Error("its private_key cannot sign (not an RSA key in PEM form)");
    }
    const answer = await this.fetchImpl(endpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "urn:ietf:params:oauth:grant-type:jwt-bearer", assertion: `${unsigned}.${signature}` }).toString(),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await answer.text();
    let json: { access_token?: unknown; expires_in?: unknown; error_description?: unknown; error?: unknown } = {};
    try {
      json = JSON.parse(text);
    } catch {
      // described below
    }
    if (!answer.ok || typeof json.access_token !== "string") {
      const why = typeof json.error_description === "string" ? json.error_description : typeof json.error === "string" ? json.error : `HTTP ${answer.status}`;
      throw new Error(`the token endpoint refused it (${why.slice(0, 200)})`);
    }
    const lifetime = typeof json.expires_in === "number" && json.expires_in > 0 ? json.expires_in : 3600;
    return { token: json.access_token, expiresAt: Date.now() + lifetime * 1000 };
  }
}

/** A cloud error answer in the Messages API's error shape, which the CLI understands and retries by. */
export function anthropicErrorOf(status: number, text: string, kind: CloudUpstream["kind"]): { type: string; message: string } {
  let message = text.trim().slice(0, 500) || `HTTP ${status}`;
  try {
    const parsed = JSON.parse(text) as { message?: unknown; Message?: unknown; error?: { message?: unknown } | unknown };
    const inner = (parsed.error && typeof parsed.error === "object" ? (parsed.error as { message?: unknown }).message : undefined) ?? parsed.message ?? parsed.Message;
    if (typeof inner === "string") message = inner.slice(0, 500);
  } catch {
    // the text itself
  }
  const type =
    status === 400 ? "invalid_request_error"
    : status === 401 ? "authentication_error"
    : status === 403 ? "permission_error"
    : status === 404 ? "not_found_error"
    : status === 413 ? "request_too_large"
    : status === 429 ? "rate_limit_error"
    : status === 503 || status === 529 ? "overloaded_error"
    : "api_error";
  return { type, message: `${kind === "bedrock" ? "Bedrock" : "Vertex AI"}: ${message}` };
}
