/**
 * Rewrites `?` placeholders into PostgreSQL's numbered `$1, $2, …`.
 *
 * The queries in this project are written once with `?` and run on SQLite and
 * PostgreSQL/CockroachDB. A `?` is left alone where it is text, not a
 * placeholder: inside '…' strings (with '' escapes, and backslash escapes in
 * E'…' strings), "…" identifiers, $tag$…$tag$ bodies, -- line comments and
 * block comments. Consequence: PostgreSQL's JSON `?` operators cannot be
 * written in queries; use `jsonb_exists(…)` or avoid them (SQLite lacks them anyway).
 */
export function toNumberedPlaceholders(sql: string): string {
  if (!sql.includes("?")) return sql;
  let out = "";
  let n = 0;
  let numbered = false;
  let i = 0;
  while (i < sql.length) {
    const ch = sql[i];
    const next = sql[i + 1];
    let end = i + 1;
    if (ch === "?") {
      out += `$${++n}`;
      i++;
      continue;
    } else if (ch === "'") {
      end = skipString(sql, i, isEscapeStringPrefix(sql, i));
    } else if (ch === '"') {
      end = skipString(sql, i, false, '"');
    } else if (ch === "-" && next === "-") {
      const newline = sql.indexOf("\n", i);
      end = newline === -1 ? sql.length : newline;
    } else if (ch === "/" && next === "*") {
      end = skipBlockComment(sql, i);
    } else if (ch === "$" && !isWordChar(sql[i - 1])) {
      if (/[0-9]/.test(next ?? "")) numbered = true;
      else end = skipDollarQuoted(sql, i);
    }
    out += sql.slice(i, end);
    i = end;
  }
  if (numbered && n > 0) throw new Error("a query cannot mix ? placeholders with numbered $n ones");
  return out;
}

function isWordChar(ch: string | undefined): boolean {
  return ch !== undefined && /[A-Za-z0-9_$\u0080-\uffff]/.test(ch);
}

/** E'…' (or e'…') where the E is a prefix, not the end of an identifier. */
function isEscapeStringPrefix(sql: string, quoteAt: number): boolean {
  const prev = sql[quoteAt - 1];
  return (prev === "E" || prev === "e") && !isWordChar(sql[quoteAt - 2]);
}

/** Index just past the closing quote; a doubled quote is an escaped quote. */
function skipString(sql: string, start: number, backslashEscapes: boolean, quote = "'"): number {
  let i = start + 1;
  while (i < sql.length) {
    if (backslashEscapes && sql[i] === "\\") {
      i += 2;
    } else if (sql[i] === quote) {
      if (sql[i + 1] !== quote) return i + 1;
      i += 2;
    } else {
      i++;
    }
  }
  return sql.length;
}

/** Block comments nest in PostgreSQL. */
function skipBlockComment(sql: string, start: number): number {
  let depth = 0;
  let i = start;
  while (i < sql.length) {
    if (sql[i] === "/" && sql[i + 1] === "*") {
      depth++;
      i += 2;
    } else if (sql[i] === "*" && sql[i + 1] === "/") {
      depth--;
      i += 2;
      if (depth === 0) return i;
    } else {
      i++;
    }
  }
  return sql.length;
}

/** `$$…$$` or `$tag$…$tag$`; a `$` that opens no such tag (e.g. `$1`) is one ordinary character. */
function skipDollarQuoted(sql: string, start: number): number {
  const tag = /^\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(sql.slice(start, start + 64))?.[0];
  if (!tag) return start + 1;
  const close = sql.indexOf(tag, start + tag.length);
  return close === -1 ? sql.length : close + tag.length;
}
