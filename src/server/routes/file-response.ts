import { Readable } from "node:stream";
import { basename, extname } from "node:path";

/** Content types by extension; anything else is served as bytes. Text types carry a charset. */
const TYPES: Record<string, string> = {
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".csv": "text/csv; charset=utf-8",
  ".log": "text/plain; charset=utf-8",
  ".json": "application/json",
  ".jsonl": "application/x-ndjson",
  ".yaml": "text/yaml; charset=utf-8",
  ".yml": "text/yaml; charset=utf-8",
  ".xml": "application/xml",
  ".py": "text/x-python; charset=utf-8",
  ".ts": "text/plain; charset=utf-8",
  ".js": "text/plain; charset=utf-8",
  ".sh": "text/plain; charset=utf-8",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".pdf": "application/pdf",
  ".zip": "application/zip",
  ".gz": "application/gzip",
  ".tar": "application/x-tar",
};

/**
 * The content type for a file name. HTML, SVG and other types a browser
 * would run are served as plain text or bytes: a workspace is written by the
 * agent, and its files must never execute in the API's origin.
 */
export function contentTypeOf(path: string): string {
  return TYPES[extname(path).toLowerCase()] ?? "application/octet-stream";
}

/** `attachment` with the name quoted safely: ASCII fallback plus RFC 5987 for the rest. */
export function contentDisposition(path: string): string {
  const name = basename(path) || "file";
  const ascii = name.replace(/[^\x20-\x7e]|["\\%;]/g, "_");
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

/** A file's bytes as an answer: typed by extension, never sniffed, always a download. */
export function fileResponse(path: string, content: Buffer | Readable, size?: number): Response {
  const body = Buffer.isBuffer(content) ? new Uint8Array(content) : (Readable.toWeb(content) as ReadableStream);
  const length = Buffer.isBuffer(content) ? content.length : size;
  return new Response(body, {
    headers: {
      "content-type": contentTypeOf(path),
      "content-disposition": contentDisposition(path),
      "x-content-type-options": "nosniff",
      "content-security-policy": "default-src 'none'; sandbox",
      "cache-control": "no-store",
      ...(length !== undefined ? { "content-length": String(length) } : {}),
    },
  });
}
