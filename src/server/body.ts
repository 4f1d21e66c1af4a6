import type { H3Event } from "h3";
import type { IncomingMessage } from "node:http";
import type { DomainError } from "../errors";
import { badRequest, tooLarge } from "./errors";

/** Deepest nesting of arrays and objects a JSON body may have. */
export const MAX_JSON_DEPTH = 64;

/**
 * Reads a JSON body without ever holding more than `maxBytes` of it: the
 * declared length is checked first, then the stream is counted as it arrives.
 * Bodies that are cut off, too large, too deeply nested or not JSON get a 4xx;
 * none of them reach a route.
 */
export async function readJsonBody(event: H3Event, maxBytes: number, options: { optional?: boolean } = {}): Promise<unknown> {
  const declared = Number(event.req.headers.get("content-length") ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) throw bodyTooLarge(maxBytes);
  const nodeReq = (event.req as { runtime?: { node?: { req?: IncomingMessage } } }).runtime?.node?.req;
  const bytes = nodeReq ? await readNodeBody(nodeReq, maxBytes) : await readWebBody(event.req.body, maxBytes);
  const text = bytes.toString("utf8");
  if (text.trim() === "") {
    if (options.optional) return undefined;
    throw badRequest("A JSON body is required.");
  }
  if (jsonDepth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) throw badRequest(`The request body nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels.`);
  try {
    return JSON.parse(text);
  } catch {
    const type = event.req.headers.get("content-type");
    const sent = type && !/^application\/(.+\+)?json\b/i.test(type) ? ` (it was sent as ${type.split(";")[0]!.slice(0, 100)})` : "";
    throw badRequest(`The request body is not valid JSON${sent}.`);
  }
}

/** A body's bytes, never more than `maxBytes` of them (a multipart upload). */
export async function readRawBody(event: H3Event, maxBytes: number): Promise<Buffer> {
  const declared = Number(event.req.headers.get("content-length") ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) throw bodyTooLarge(maxBytes);
  const nodeReq = (event.req as { runtime?: { node?: { req?: IncomingMessage } } }).runtime?.node?.req;
  return nodeReq ? readNodeBody(nodeReq, maxBytes) : readWebBody(event.req.body, maxBytes);
}

/**
 * Reads straight from Node's request, so that on overflow it can simply stop
 * listening: the rest of the body is then drained (bounded) after the answer
 * has gone out (see server.ts), and the client reads its 413 instead of a reset.
 */
function readNodeBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // `complete` only says the whole body has arrived; unless it was read already it is still
    // buffered in the stream (a route that awaited something first must still get it).
    if (req.readableEnded) return resolve(Buffer.alloc(0));
    if (req.destroyed) return reject(cutOff());
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onCut);
      req.off("close", onCut);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size > maxBytes) {
        cleanup();
        req.pause();
        chunks.length = 0;
        return reject(bodyTooLarge(maxBytes));
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onCut = () => {
      cleanup();
      reject(cutOff());
    };
    req.on("data", onData);
    req.once("end", onEnd);
    req.once("error", onCut);
    req.once("close", onCut);
  });
}

async function readWebBody(stream: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<Buffer> {
  if (!stream) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = stream.getReader();
  while (true) {
    let result: Awaited<ReturnType<typeof reader.read>>;
    try {
      result = await reader.read();
    } catch {
      throw cutOff();
    }
    if (result.done) break;
    size += result.value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw bodyTooLarge(maxBytes);
    }
    chunks.push(result.value);
  }
  return Buffer.concat(chunks);
}

// The client went away mid-body (or broke the chunked framing); nobody may read this answer.
const cutOff = () => badRequest("The request body ended before it was complete.");

function bodyTooLarge(maxBytes: number): DomainError {
  return tooLarge( `The request body is larger than the ${formatBytes(maxBytes)} limit.`);
}

/**
 * The deepest nesting of `[`/`{` in JSON text, counted without recursion and
 * skipping string contents (with their escapes), so a hostile body cannot
 * overflow the stack of a parser or of anything that walks the parsed value.
 * Stops counting once `limit` is passed.
 */
export function jsonDepth(text: string, limit = Infinity): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) {
        max = depth;
        if (max > limit) return max;
      }
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

function formatBytes(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${Math.round(bytes / (1024 * 1024))} MB` : `${Math.round(bytes / 1024)} KB`;
}
