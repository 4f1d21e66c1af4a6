import { randomBytes } from "node:crypto";
import { chmod, readFile, writeFile } from "node:fs/promises";

/**
 * The `.env` beside a generated Compose file holds its secrets. Existing values
 * are never replaced or printed; only missing (or empty) ones are generated.
 */

/** 32 random bytes, base64url: 43 characters, safe in URLs, shells and .env files. */
export function generateSecret(): string {
  return randomBytes(32).toString("base64url");
}

const ASSIGNMENT = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$/;

function unquote(raw: string): string {
  const value = raw.trim();
  if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.endsWith(value[0])) return value.slice(1, -1);
  return value.replace(/\s+#.*$/, "");
}

/** The variables a .env text assigns (last assignment wins, as in Compose). */
export function parseDotEnv(text: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    if (/^\s*(#|$)/.test(line)) continue;
    const match = ASSIGNMENT.exec(line);
    if (match) values[match[1]] = unquote(match[2]);
  }
  return values;
}

export interface DotEnvResult {
  /** Whether the file did not exist before. */
  createdFile: boolean;
  /** Names given a new value now, with those values (to show once). */
  generated: Record<string, string>;
  /** Names that already had a value (left untouched, never shown). */
  kept: string[];
}

/**
 * Makes sure `path` assigns a non-empty value to each of `names`.
 * A new file is written with mode 0600 and a short header.
 */
export async function ensureDotEnvSecrets(path: string, names: readonly string[], header: readonly string[] = []): Promise<DotEnvResult> {
  let text: string | undefined;
  try {
    text = await readFile(path, "utf8");
  } catch (error: any) {
    if (error?.code !== "ENOENT") throw error;
  }

  const existing = parseDotEnv(text ?? "");
  const kept = names.filter((name) => existing[name]);
  const generated: Record<string, string> = {};
  for (const name of names) if (!existing[name]) generated[name] = generateSecret();
  if (Object.keys(generated).length === 0) return { createdFile: false, generated, kept };

  let lines = text === undefined ? header.map((line) => (line ? `# ${line}` : "#")) : text.replace(/\r?\n$/, "").split(/\r?\n/);
  for (const [name, value] of Object.entries(generated)) {
    // An empty assignment (NAME=) is filled in where it is; otherwise the line is added.
    const emptyAt = lines.findLastIndex((line) => ASSIGNMENT.exec(line)?.[1] === name);
    if (emptyAt !== -1) lines[emptyAt] = `${name}=${value}`;
    else lines = [...lines, `${name}=${value}`];
  }
  await writeFile(path, lines.join("\n") + "\n", { mode: 0o600 });
  if (text === undefined) await chmod(path, 0o600);
  return { createdFile: text === undefined, generated, kept };
}
