import { getQuery, type H3Event } from "h3";
import type { z } from "zod";
import { badRequest } from "./errors";

/** Parses with a zod schema; the 400 sentence names the first offending field. */
export function validate<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = issue.path.join(".");
  if (issue.code === "unrecognized_keys") {
    const keys = (issue as any).keys as string[];
    const where = field ? ` in ${field}` : "";
    throw badRequest(`Unknown field${keys.length > 1 ? "s" : ""}${where}: ${keys.join(", ")}.`);
  }
  if (issue.code === "invalid_type" && valueAt(value, issue.path) === undefined) throw badRequest(`The field "${field}" is required.`);
  throw badRequest(field ? `The field "${field}" is invalid: ${issue.message}.` : `The request body is invalid: ${issue.message}.`);
}

/** What the input holds at an issue's path (zod does not report the input itself). */
function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let at = value;
  for (const key of path) {
    if (at === null || typeof at !== "object") return undefined;
    at = (at as Record<PropertyKey, unknown>)[key];
  }
  return at;
}

/**
 * A sequence number as a client sends it back (Last-Event-ID, ?after=):
 * plain decimal digits only, so "-0", "0x10", "1e3" or " 5 " are refused
 * instead of being read as some other number.
 */
export function parseSequence(raw: string, what: string): number {
  if (!/^[0-9]{1,16}$/.test(raw) || !Number.isSafeInteger(Number(raw))) {
    throw badRequest(`${what} must be a sequence number this server sent (decimal digits only).`);
  }
  return Number(raw);
}

/** A whole number in [min, max] written as plain decimal digits. */
export function parseWholeNumber(raw: string, what: string, min: number, max: number): number {
  const value = /^[0-9]{1,16}$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) throw badRequest(`${what} must be a whole number from ${min} to ${max}.`);
  return value;
}

/**
 * The query string of an /api route, one value per name: a repeated name
 * (`?type=a&type=b`) is refused with a 400 rather than guessed at or passed on
 * as a list where a string is expected.
 */
export function singleQuery(event: H3Event): Record<string, string | undefined> {
  const query = getQuery(event) as Record<string, string | string[] | undefined>;
  for (const [name, value] of Object.entries(query)) {
    if (Array.isArray(value)) throw badRequest(`The query parameter "${name}" was given more than once.`);
  }
  return query as Record<string, string | undefined>;
}
