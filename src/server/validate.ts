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
  if (issue.code === "invalid_type" && (issue as any).input === undefined) throw badRequest(`The field "${field}" is required.`);
  throw badRequest(field ? `The field "${field}" is invalid: ${issue.message}.` : `The request body is invalid: ${issue.message}.`);
}
