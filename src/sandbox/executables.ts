import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Absolute path of an executable on PATH (plus the usual system dirs), or undefined. */
export function findExecutable(name: string, path = process.env.PATH ?? ""): string | undefined {
  const dirs = [...path.split(delimiter), ...SYSTEM_PATH.split(":")].filter(Boolean);
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}

/** The PATH sandboxed processes get: system directories only. */
export const SANDBOX_PATH = SYSTEM_PATH;
