import { lstat, readdir, readFile, realpath, stat } from "node:fs/promises";
import { basename, isAbsolute, join, relative, resolve, sep } from "node:path";
import { AGENT_NAME, type UploadedFile as AgentFile } from "../contract";

/**
 * Reads an agent folder for `POST /api/agents`: every file as a relative path with base64
 * content, except dependency and VCS folders, and except `.env` files, whose variables become
 * the agent's environment instead of being uploaded as files (so secrets are not stored in
 * the agent's folder on the server, and the server shows them masked).
 */

/** Folders that are never part of an agent. */
const SKIPPED_DIRS = new Set(["node_modules", ".git"]);

/** `.env` files that hold example values, not real ones: uploaded as ordinary files. */
const EXAMPLE_ENV_FILES = /^\.env\.(example|sample|template|dist)$/i;

/** A file the reader refuses or a folder it cannot use; its message is a sentence for the user. */
export class AgentFolderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AgentFolderError";
  }
}

export interface AgentFolder {
  /** The folder's absolute path. */
  dir: string;
  /** Files to upload, sorted by path. */
  files: AgentFile[];
  /** Variables read from the folder's `.env` files, later files winning (`.env.local` last). */
  env: Record<string, string>;
  /** The `.env` files that were read, relative to the folder. */
  envFiles: string[];
  /** Total bytes of the files (before base64). */
  totalBytes: number;
}

/** Is `name` an environment file read as variables (top level only), rather than uploaded? */
export function isEnvFileName(name: string): boolean {
  return (name === ".env" || name.startsWith(".env.")) && !EXAMPLE_ENV_FILES.test(name);
}

/** Reads `dir` as an agent folder; throws `AgentFolderError` with a sentence when it cannot be used. */
export async function readAgentFolder(dir: string): Promise<AgentFolder> {
  const root = resolve(dir);
  const info = await stat(root).catch(() => undefined);
  if (!info) throw new AgentFolderError(`${dir} does not exist.`);
  if (!info.isDirectory()) throw new AgentFolderError(`${dir} is a file, and an agent is a folder: give the folder that holds CLAUDE.md (and .claude/, .mcp.json, data files).`);
  const realRoot = await realpath(root);

  const claude = await lstat(join(root, "CLAUDE.md")).catch(() => undefined);
  if (!claude || !(claude.isFile() || claude.isSymbolicLink())) {
    throw new AgentFolderError(`${dir} has no CLAUDE.md; an agent folder needs one, it is the agent's system prompt.`);
  }

  const files: AgentFile[] = [];
  const envFiles: string[] = [];
  let totalBytes = 0;
  const visited = new Set<string>([realRoot]);

  async function addFile(absolute: string, rel: string): Promise<void> {
    const [content, info] = await Promise.all([readFile(absolute), stat(absolute)]);
    totalBytes += content.length;
    // Scripts the agent runs must stay executable.
    files.push({ path: rel, content: content.toString("base64"), mode: info.mode & 0o777 });
  }

  async function walk(absolute: string, rel: string): Promise<void> {
    const entries = await readdir(absolute, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const childAbs = join(absolute, entry.name);
      const childRel = rel ? `${rel}/${entry.name}` : entry.name;

      if (rel === "" && isEnvFileName(entry.name) && !entry.isDirectory()) {
        envFiles.push(childRel);
        continue;
      }

      if (entry.isSymbolicLink()) {
        const target = await realpath(childAbs).catch(() => undefined);
        if (!target) throw new AgentFolderError(`${childRel} is a symlink to something that does not exist; remove it or fix it.`);
        if (!isInside(realRoot, target)) {
          throw new AgentFolderError(`${childRel} is a symlink to ${target}, outside the agent folder; copy what it points to into the folder instead.`);
        }
        const targetInfo = await stat(target);
        if (targetInfo.isDirectory()) {
          if (SKIPPED_DIRS.has(entry.name) || visited.has(target)) continue;
          visited.add(target);
          await walk(target, childRel);
        } else if (targetInfo.isFile()) {
          await addFile(target, childRel);
        }
        continue;
      }

      if (entry.isDirectory()) {
        if (SKIPPED_DIRS.has(entry.name)) continue;
        const real = await realpath(childAbs);
        if (visited.has(real)) continue;
        visited.add(real);
        await walk(childAbs, childRel);
      } else if (entry.isFile()) {
        await addFile(childAbs, childRel);
      }
      // Sockets, FIFOs and devices are not agent content.
    }
  }

  await walk(root, "");

  // `.env` first, `.env.local` last, the others in between by name: the usual precedence.
  envFiles.sort((a, b) => envRank(a) - envRank(b) || (a < b ? -1 : a > b ? 1 : 0));
  const env: Record<string, string> = {};
  for (const name of envFiles) {
    const text = await readFile(join(root, name), "utf8");
    Object.assign(env, parseEnvFile(text, name));
  }

  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { dir: root, files, env, envFiles, totalBytes };
}

function envRank(name: string): number {
  if (name === ".env") return 0;
  if (name === ".env.local") return 2;
  return 1;
}

function isInside(root: string, target: string): boolean {
  const rel = relative(root, target);
  return rel === "" || (rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** The default agent name for a folder: its own name, when that is a valid agent name. */
export function agentNameFromFolder(dir: string): string | undefined {
  const name = basename(resolve(dir));
  return AGENT_NAME.test(name) ? name : undefined;
}

export { AGENT_NAME };

const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Parses dotenv text: `KEY=VALUE` lines, optional `export ` prefix, `#` comments (whole-line,
 * or after an unquoted value and a space), single quotes (literal), double quotes (with
 * `\n`, `\t`, `\"`, `\\` escapes, may span lines), backquotes (literal). A malformed line is
 * an error naming the file and line, so a typo does not silently drop a secret.
 */
export function parseEnvFile(text: string, fileName = ".env"): Record<string, string> {
  const env: Record<string, string> = {};
  const lines = text.replace(/^\ufeff/, "").split(/\r\n|\r|\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let line = lines[i].trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("export ")) line = line.slice("export ".length).trimStart();
    const eq = line.indexOf("=");
    if (eq === -1) throw new AgentFolderError(`${fileName} line ${lineNo} is not KEY=VALUE.`);
    const key = line.slice(0, eq).trim();
    if (!ENV_KEY.test(key)) throw new AgentFolderError(`${fileName} line ${lineNo}: "${key}" is not a valid variable name.`);
    let rest = line.slice(eq + 1).trimStart();
    const quote = rest[0];

    if (quote === '"' || quote === "'" || quote === "`") {
      // Find the closing quote, continuing onto later lines if need be.
      let body = rest.slice(1);
      let close = findClosingQuote(body, quote);
      while (close === -1 && i + 1 < lines.length) {
        i++;
        body += "\n" + lines[i];
        close = findClosingQuote(body, quote);
      }
      if (close === -1) throw new AgentFolderError(`${fileName} line ${lineNo}: the value of ${key} has no closing ${quote}.`);
      const after = body.slice(close + 1).trim();
      if (after !== "" && !after.startsWith("#")) {
        throw new AgentFolderError(`${fileName} line ${lineNo}: unexpected text after the quoted value of ${key}.`);
      }
      const raw = body.slice(0, close);
      env[key] = quote === '"' ? unescapeDouble(raw) : raw;
      continue;
    }

    const comment = rest.search(/\s#/);
    if (comment !== -1) rest = rest.slice(0, comment);
    env[key] = rest.trim();
  }
  return env;
}

function findClosingQuote(text: string, quote: string): number {
  for (let i = 0; i < text.length; i++) {
    if (quote === '"' && text[i] === "\\") {
      i++;
      continue;
    }
    if (text[i] === quote) return i;
  }
  return -1;
}

function unescapeDouble(raw: string): string {
  return raw.replace(/\\(.)/gs, (_, ch: string) => {
    switch (ch) {
      case "n":
        return "\n";
      case "r":
        return "\r";
      case "t":
        return "\t";
      default:
        return ch;
    }
  });
}

/**
 * Parses one `KEY=VALUE` given on the command line (`-e`). The value is taken as is (the
 * shell already removed quotes); an empty value is allowed, a missing `=` is not.
 */
export function parseEnvAssignment(text: string): [string, string] {
  const eq = text.indexOf("=");
  if (eq <= 0) throw new AgentFolderError(`"${text}" is not KEY=VALUE; write it like -e API_TOKEN=abc123.`);
  const key = text.slice(0, eq);
  if (!ENV_KEY.test(key)) throw new AgentFolderError(`"${key}" is not a valid variable name (letters, digits and _, not starting with a digit).`);
  return [key, text.slice(eq + 1)];
}
