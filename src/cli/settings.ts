import { mkdir, readFile, writeFile, chmod } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";

/** What the CLI remembers between commands, in `~/.ash/config.json` (mode 0600). */
export interface CliSettings {
  /** Where the server answers, e.g. `http://localhost:4100`. */
  url?: string;
  /** The API key for `/api/*`. */
  apiKey?: string;
}

export const DEFAULT_SERVER_URL = "http://localhost:4100";

/** `~/.ash`, the host folder mounted at `/data` in the container. */
export function ashHome(): string {
  return join(process.env.HOME || homedir(), ".ash");
}

export function settingsPath(): string {
  return join(ashHome(), "config.json");
}

export async function readSettings(): Promise<CliSettings> {
  let text: string;
  try {
    text = await readFile(settingsPath(), "utf8");
  } catch (error: any) {
    if (error?.code === "ENOENT") return {};
    throw error;
  }
  try {
    const parsed = JSON.parse(text);
    return parsed && typeof parsed === "object" ? parsed : {};
  } catch {
    throw new Error(`${settingsPath()} is not valid JSON; fix or delete it.`);
  }
}

/** Merges `patch` into the saved settings; the file holds a key, so it is 0600. */
export async function writeSettings(patch: CliSettings): Promise<CliSettings> {
  const next = { ...(await readSettings()), ...patch };
  await mkdir(ashHome(), { recursive: true });
  await writeFile(settingsPath(), JSON.stringify(next, null, 2) + "\n", { mode: 0o600 });
  await chmod(settingsPath(), 0o600);
  return next;
}

/**
 * Where to find the server and which key to use, first match wins:
 * flags, then ASH_SERVER_URL / ASH_API_KEY, then the settings file, then the default URL.
 */
export async function resolveServer(flags: { url?: string; apiKey?: string } = {}): Promise<Required<Pick<CliSettings, "url">> & CliSettings> {
  const saved = await readSettings();
  const url = flags.url || process.env.ASH_SERVER_URL || saved.url || DEFAULT_SERVER_URL;
  const apiKey = flags.apiKey || process.env.ASH_API_KEY || saved.apiKey;
  return { url: url.replace(/\/+$/, ""), apiKey };
}
