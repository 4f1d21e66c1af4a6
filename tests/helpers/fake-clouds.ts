import { createHash, createHmac, createVerify, randomBytes, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { EventStreamCodec } from "@smithy/eventstream-codec";
import { fromUtf8, toUtf8 } from "@smithy/util-utf8";

/**
 * Stand-ins for Amazon Bedrock and Google Vertex AI on 127.0.0.1, written from
 * their documented wire formats (not from our gateway's code): Bedrock checks
 * the SigV4 signature itself and answers in its binary event stream; Vertex
 * hands out access tokens for a service account's signed JWT and answers
 * server-sent events. Both get their answers from the fake model.
 */

export interface CloudCall {
  path: string;
  /** The model id in the path, decoded. */
  model: string;
  body: any;
  headers: IncomingMessage["headers"];
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

const sha256 = (data: string | Buffer) => createHash("sha256").update(data).digest("hex");
const hmac = (key: Buffer | string, data: string) => createHmac("sha256", key).update(data).digest();

/** The fake model's answer to a Messages API request, as parsed SSE events. */
async function askModel(modelUrl: string, request: Record<string, unknown>): Promise<Response> {
  return fetch(`${modelUrl}/v1/messages`, { method: "POST", headers: { "content-type": "application/json", "x-api-key": "fake", "anthropic-version": "2023-06-01" }, body: JSON.stringify(request) });
}

function sseEvents(text: string): unknown[] {
  return text
    .split("\n\n")
    .map((block) => block.split("\n").find((line) => line.startsWith("data: "))?.slice(6))
    .filter((data): data is string => Boolean(data))
    .map((data) => JSON.parse(data));
}

/** SigV4 as AWS documents it: the canonical request, the string to sign, the derived key. */
function sigV4Valid(req: IncomingMessage, body: Buffer, secretAccessKey: string, accessKeyId: string): string | undefined {
  const auth = String(req.headers.authorization ?? "");
  const match = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(auth);
  if (!match) return "no SigV4 authorization header";
  const [, keyId, date, region, service, signedHeaders, signature] = match as unknown as string[];
  if (keyId !== accessKeyId) return "unknown access key";
  if (service !== "bedrock") return `signed for service ${service}`;
  const amzDate = String(req.headers["x-amz-date"] ?? "");
  if (!amzDate.startsWith(date!)) return "x-amz-date does not match the scope";
  const names = signedHeaders!.split(";");
  for (const required of ["host", "x-amz-date"]) if (!names.includes(required)) return `${required} is not signed`;
  const canonicalHeaders = names.map((name) => `${name}:${String(req.headers[name] ?? "").trim().replace(/\s+/g, " ")}\n`).join("");
  const [rawPath, rawQuery = ""] = (req.url ?? "/").split("?");
  // Services other than S3 sign the path encoded twice.
  const canonicalPath = rawPath!.split("/").map((segment) => encodeURIComponent(segment)).join("/");
  const canonical = ["POST", canonicalPath, rawQuery, canonicalHeaders, signedHeaders, sha256(body)].join("\n");
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256(canonical)].join("\n");
  const key = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date!), region!), service!), "aws4_request");
  const expected = createHmac("sha256", key).update(toSign).digest("hex");
  return timingSafeEqual(Buffer.from(expected), Buffer.from(signature!)) ? undefined : "signature does not match";
}

export interface FakeBedrock {
  url: string;
  calls: CloudCall[];
  /** Answers the next calls with this status and body instead (Bedrock's error shape). */
  failNext(count: number, status: number, body: unknown): void;
  close(): Promise<void>;
}

export async function startFakeBedrock(options: { modelUrl: string; accessKeyId: string; secretAccessKey: string; apiKey: string }): Promise<FakeBedrock> {
  const codec = new EventStreamCodec(toUtf8, fromUtf8);
  const calls: CloudCall[] = [];
  let failures: { count: number; status: number; body: unknown } | undefined;
  const refuse = (res: ServerResponse, status: number, message: string) => {
    res.writeHead(status, { "content-type": "application/json", "x-amzn-errortype": "AccessDeniedException" });
    res.end(JSON.stringify({ message }));
  };
  const server = createServer(async (req, res) => {
    const body = await readBody(req);
    const match = /^\/model\/([^/]+)\/(invoke|invoke-with-response-stream)$/.exec(req.url ?? "");
    if (req.method !== "POST" || !match) return refuse(res, 404, `No route ${req.method} ${req.url}`);
    // A Bedrock API key comes as a bearer token; anything else must be signed.
    const bearer = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ""))?.[1];
    const why = bearer !== undefined ? (bearer === options.apiKey ? undefined : "unknown API key") : sigV4Valid(req, body, options.secretAccessKey, options.accessKeyId);
    if (why) return refuse(res, 403, `The request signature we calculated does not match the signature you provided (${why}).`);
    const parsed = JSON.parse(body.toString("utf8"));
    const model = decodeURIComponent(match[1]!);
    calls.push({ path: req.url ?? "", model, body: parsed, headers: req.headers });
    if (failures && failures.count > 0) {
      failures.count--;
      res.writeHead(failures.status, { "content-type": "application/json" });
      return res.end(JSON.stringify(failures.body));
    }
    if (parsed.anthropic_version !== "bedrock-2023-05-31" || "model" in parsed || "stream" in parsed) {
      return refuse(res, 400, "Malformed input request: anthropic_version must be bedrock-2023-05-31, without model or stream.");
    }
    const { anthropic_version: _v, anthropic_beta: _b, ...request } = parsed;
    const stream = match[2] === "invoke-with-response-stream";
    const answer = await askModel(options.modelUrl, { ...request, model, stream });
    if (!stream) {
      res.writeHead(answer.status, { "content-type": "application/json" });
      return res.end(await answer.text());
    }
    res.writeHead(200, { "content-type": "application/vnd.amazon.eventstream" });
    for (const event of sseEvents(await answer.text())) {
      const frame = codec.encode({
        headers: { ":event-type": { type: "string", value: "chunk" }, ":message-type": { type: "string", value: "event" }, ":content-type": { type: "string", value: "application/json" } },
        body: fromUtf8(JSON.stringify({ bytes: Buffer.from(JSON.stringify(event)).toString("base64") })),
      });
      // Split each frame in two writes, as a network may.
      const half = Math.floor(frame.length / 2);
      res.write(Buffer.from(frame.subarray(0, half)));
      res.write(Buffer.from(frame.subarray(half)));
    }
    res.end();
  });
  const url = await listen(server);
  return {
    url,
    calls,
    failNext: (count, status, body) => (failures = { count, status, body }),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

export interface FakeVertex {
  url: string;
  tokenUrl: string;
  calls: CloudCall[];
  tokensIssued: number;
  close(): Promise<void>;
}

export async function startFakeVertex(options: { modelUrl: string; clientEmail: string; publicKey: string; projectId: string; region: string }): Promise<FakeVertex> {
  const calls: CloudCall[] = [];
  const tokens = new Set<string>();
  const state = { tokensIssued: 0 };
  let url = "";
  const error = (res: ServerResponse, status: number, message: string) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { code: status, message, status: status === 401 ? "UNAUTHENTICATED" : "INVALID_ARGUMENT" } }));
  };
  const server = createServer(async (req, res) => {
    const body = await readBody(req);
    if (req.url === "/token") {
      const form = new URLSearchParams(body.toString("utf8"));
      const [header, claims, signature] = (form.get("assertion") ?? "").split(".");
      const verified = header && claims && signature && createVerify("RSA-SHA256").update(`${header}.${claims}`).verify(options.publicKey, Buffer.from(signature, "base64url"));
      const c = verified ? JSON.parse(Buffer.from(claims!, "base64url").toString("utf8")) : {};
      const now = Date.now() / 1000;
      if (form.get("grant_type") !== "urn:ietf:params:oauth:grant-type:jwt-bearer" || !verified || c.iss !== options.clientEmail || c.aud !== `${url}/token` || !(c.exp > now) || !/cloud-platform/.test(c.scope)) {
        res.writeHead(400, { "content-type": "application/json" });
        return res.end(JSON.stringify({ error: "invalid_grant", error_description: "Invalid JWT Signature." }));
      }
      const token = `ya29.${randomBytes(24).toString("base64url")}`;
      tokens.add(token);
      state.tokensIssued++;
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ access_token: token, expires_in: 3599, token_type: "Bearer" }));
    }
    const prefix = `/v1/projects/${options.projectId}/locations/${options.region}/publishers/anthropic/models/`;
    const path = req.url ?? "";
    const match = path.startsWith(prefix) ? /^([^/:]+):(rawPredict|streamRawPredict)$/.exec(path.slice(prefix.length)) : null;
    if (req.method !== "POST" || !match) return error(res, 404, `No route ${req.method} ${path}`);
    const bearer = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ""))?.[1];
    if (!bearer || !tokens.has(bearer)) return error(res, 401, "Request had invalid authentication credentials.");
    const parsed = JSON.parse(body.toString("utf8"));
    const model = decodeURIComponent(match[1]!);
    calls.push({ path, model, body: parsed, headers: req.headers });
    if (parsed.anthropic_version !== "vertex-2023-10-16" || "model" in parsed) return error(res, 400, "anthropic_version must be vertex-2023-10-16 and model must not be in the body.");
    const { anthropic_version: _v, ...request } = parsed;
    const answer = await askModel(options.modelUrl, { ...request, model });
    res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
    res.end(Buffer.from(await answer.arrayBuffer()));
  });
  url = await listen(server);
  return {
    url,
    tokenUrl: `${url}/token`,
    calls,
    get tokensIssued() {
      return state.tokensIssued;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
