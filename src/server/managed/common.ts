import { getQuery, type H3Event } from "h3";
import { z } from "zod";
import { badRequest } from "../errors";
import { parseWholeNumber } from "../validate";

/** RFC 3339, as every /v1 time is written. */
export const iso = (ms: number) => new Date(ms).toISOString();
export const isoOrNull = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : iso(ms));

/** Metadata as the API takes it: up to 16 string pairs, keys up to 64 characters, values up to 512. */
export const metadataSchema = z
  .record(z.string().min(1).max(64), z.string().max(512))
  .refine((m) => Object.keys(m).length <= 16, "must have at most 16 keys");
/** A change to metadata: a string sets the key, null removes it. */
export const metadataPatchSchema = z.record(z.string().min(1).max(64), z.string().max(512).nullable());

/** Applies a metadata change (null: clear all) and checks the result's size. */
export function patchMetadata(current: Record<string, string>, patch: Record<string, string | null> | null | undefined): Record<string, string> {
  if (patch === undefined) return current;
  if (patch === null) return {};
  const next = { ...current };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete next[key];
    else next[key] = value;
  }
  if (Object.keys(next).length > 16) throw badRequest('The field "metadata" is invalid: must have at most 16 keys.');
  return next;
}

export type Query = Record<string, string | string[] | undefined>;
export const queryOf = (event: H3Event) => getQuery(event) as Query;

/** A single query value (a repeated one is refused rather than guessed at). */
export function single(q: Query, name: string): string | undefined {
  const value = q[name];
  if (Array.isArray(value)) throw badRequest(`The query parameter "${name}" was given more than once.`);
  return value;
}

export function limitOf(q: Query, fallback = 20, max = 100): number {
  const raw = single(q, "limit");
  return raw === undefined ? fallback : parseWholeNumber(raw, 'The query parameter "limit"', 1, max);
}

export function booleanOf(q: Query, name: string): boolean {
  const raw = single(q, name);
  if (raw === undefined) return false;
  if (raw === "true" || raw === "false") return raw === "true";
  throw badRequest(`The query parameter "${name}" must be true or false.`);
}

/** Values of a list parameter as the SDK writes them: `name[]=a&name[]=b` (or `name=a&name=b`). */
export function listOf(q: Query, name: string): string[] {
  const value = q[`${name}[]`] ?? q[name];
  return value === undefined ? [] : Array.isArray(value) ? value : [value];
}

/**
 * Page tokens are opaque to clients: base64url JSON of where the page ends
 * (creation time and id) and which way the next read goes.
 */
export interface PageToken {
  createdAt: number;
  id: string;
  back?: boolean;
}

export function encodePage(token: PageToken): string {
  return Buffer.from(JSON.stringify([token.createdAt, token.id, token.back ? 1 : 0])).toString("base64url");
}

export function decodePage(q: Query): PageToken | undefined {
  const raw = single(q, "page");
  if (raw === undefined || raw === "") return undefined;
  try {
    const [createdAt, id, back] = JSON.parse(Buffer.from(raw, "base64url").toString("utf8"));
    if (typeof createdAt === "number" && typeof id === "string" && (back === 0 || back === 1)) return { createdAt, id, back: back === 1 };
  } catch {
    // fall through
  }
  throw badRequest('The query parameter "page" is not a page token this server gave out.');
}

/** One forward page of `rows` read with limit + 1: the items and the token of the next page. */
export function forwardPage<T extends { createdAt: number; id: string }>(rows: T[], limit: number): { items: T[]; next: string | null } {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items, next: rows.length > limit && last ? encodePage({ createdAt: last.createdAt, id: last.id }) : null };
}

/** Fields of the API this server has nothing behind: refused by name, with where to go instead. */
export function refuseFields(raw: unknown, reasons: Record<string, string>): void {
  if (!raw || typeof raw !== "object") return;
  for (const [field, reason] of Object.entries(reasons)) {
    const value = (raw as Record<string, unknown>)[field];
    if (value !== undefined && value !== null) throw badRequest(`${field}: ${reason}`);
  }
}
