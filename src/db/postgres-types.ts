/**
 * How PostgreSQL values come back as JavaScript values. `pg` returns BIGINT
 * and NUMERIC as strings; SQLite returns numbers. Timestamps here are epoch
 * milliseconds in BIGINT columns, and COUNT(*) / SUM() are BIGINT / NUMERIC,
 * so the same query would give a string on one dialect and a number on the
 * other. These parsers make them numbers on both, as long as the value fits
 * a double exactly; larger values keep pg's string form rather than lose digits.
 */
import pg from "pg";

const INT8_OID = 20;
const NUMERIC_OID = 1700;

function integerOrString(text: string): number | string {
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : text;
}

function numericOrString(text: string): number | string {
  if (/^-?\d+$/.test(text)) return integerOrString(text);
  const value = Number(text);
  return Number.isFinite(value) ? value : text;
}

/** Passed as a pool's `types`, so the process-wide `pg.types` stay untouched. */
export const ashTypeParsers: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") => {
    if (format !== "binary") {
      if (oid === INT8_OID) return integerOrString;
      if (oid === NUMERIC_OID) return numericOrString;
    }
    return pg.types.getTypeParser(oid, format ?? "text");
  }) as pg.CustomTypesConfig["getTypeParser"],
};
