/**
 * Storage keys for workspace files. unstorage splits keys on ":" "/" and
 * "\", drops everything after "?", and the fs driver refuses a segment that
 * ends in "..": those characters are escaped (and "%" itself), so every
 * file name maps to one key and back. Ordinary names stay as they are,
 * which keeps the fs layout readable.
 */
export function escapeSegment(segment: string): string {
  let out = segment.replace(/[%:?\\]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`);
  if (out.endsWith(".")) out = `${out.slice(0, -1)}%2E`;
  return out;
}

export function unescapeSegment(segment: string): string {
  return segment.replace(/%([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

/** Key of a workspace-relative path ("a/b.txt") under a prefix ("s1:workspace"). */
export function fileKey(prefix: string, relativePath: string): string {
  return `${prefix}:${relativePath.split("/").map(escapeSegment).join(":")}`;
}

/** Same mapping, as a relative filesystem path (for the fs driver's fast paths). */
export function filePath(relativePath: string): string {
  return relativePath.split("/").map(escapeSegment).join("/");
}

const SAFE_ID = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/;

/** Session ids become key and folder names: only a safe alphabet. */
export function assertSessionId(sessionId: string): void {
  if (typeof sessionId !== "string" || !SAFE_ID.test(sessionId) || sessionId.endsWith(".")) {
    throw new Error(`Invalid session id for a snapshot: ${JSON.stringify(sessionId)}`);
  }
}

/** A workspace-relative path as callers pass it: "a/b.txt", no "..", no leading "/". */
export function normalizeRelativePath(path: string): string {
  if (typeof path !== "string" || path.includes("\0")) throw new Error(`Invalid snapshot path: ${JSON.stringify(path)}`);
  const parts = path.split("/").filter((part) => part !== "" && part !== ".");
  if (parts.length === 0 || parts.includes("..")) throw new Error(`Invalid snapshot path: ${JSON.stringify(path)}`);
  return parts.join("/");
}
