import type { H3Event } from "h3";
import { badRequest, tooLarge } from "./errors";

/**
 * Reads a JSON body without ever holding more than `maxBytes` of it: the
 * declared length is checked first, then the stream is counted as it arrives.
 */
export async function readJsonBody(event: H3Event, maxBytes: number): Promise<unknown> {
  const declared = Number(event.req.headers.get("content-length") ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge(`The request body is larger than the ${formatBytes(maxBytes)} limit.`);
  const stream = event.req.body;
  if (!stream) throw badRequest("A JSON body is required.");
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = stream.getReader();
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge(`The request body is larger than the ${formatBytes(maxBytes)} limit.`);
    }
    chunks.push(value);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") throw badRequest("A JSON body is required.");
  try {
    return JSON.parse(text);
  } catch {
    throw badRequest("The request body is not valid JSON.");
  }
}

function formatBytes(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${Math.round(bytes / (1024 * 1024))} MB` : `${Math.round(bytes / 1024)} KB`;
}
