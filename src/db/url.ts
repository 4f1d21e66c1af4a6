/** Which database a URL names, and how to print it without its password. */
import { isAbsolute, resolve } from "node:path";

export type DatabaseTarget = { dialect: "sqlite"; path: string } | { dialect: "postgres"; url: string };

export const SQLITE_FILE_NAME = "ash.db";

/**
 * No URL, `sqlite:` or `file:` → SQLite at `<dataDir>/ash.db`; `sqlite:<path>`,
 * `sqlite:///abs/path.db` or `file:<path>` name another file (relative paths
 * are taken from the data directory). `postgres://` and `postgresql://` →
 * PostgreSQL or CockroachDB. Anything else is refused.
 */
export function resolveDatabaseTarget(url: string | undefined, dataDir: string): DatabaseTarget {
  const text = url?.trim() ?? "";
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(text)?.[1]?.toLowerCase();
  if (!text || scheme === "sqlite" || scheme === "file") {
    const rest = decodeURIComponent(text.replace(/^(sqlite|file):(\/\/)?/i, ""));
    const path = rest ? (isAbsolute(rest) ? rest : resolve(dataDir, rest)) : resolve(dataDir, SQLITE_FILE_NAME);
    return { dialect: "sqlite", path };
  }
  if (scheme === "postgres" || scheme === "postgresql") {
    try {
      new URL(text);
    } catch {
      throw new Error(`the database URL is not a valid URL: ${redactUrl(text)}`);
    }
    return { dialect: "postgres", url: text };
  }
  throw new Error(
    `unsupported database URL scheme "${scheme ?? text.slice(0, 12)}": use postgres://, postgresql://, sqlite: or file:`,
  );
}

/** The URL with its password replaced by `***`, safe for logs and error messages. */
export function redactUrl(url: string): string {
  const start = url.indexOf("://");
  if (start === -1) return url;
  const authorityStart = start + 3;
  const slash = url.indexOf("/", authorityStart);
  const authorityEnd = slash === -1 ? url.length : slash;
  // The last @ of the authority ends the credentials, even when the password holds an unescaped @.
  const at = url.lastIndexOf("@", authorityEnd - 1);
  if (at < authorityStart) return url;
  const colon = url.indexOf(":", authorityStart);
  if (colon === -1 || colon > at) return url;
  return `${url.slice(0, colon + 1)}***${url.slice(at)}`;
}
