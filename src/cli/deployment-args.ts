import { access } from "node:fs/promises";
import { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_SANDBOXES, defaultImage } from "../runspec";

/** The server settings both `ash compose generate` and `ash kube generate` take, defined once. */
export const deploymentArgs = {
  image: { type: "string", description: `Server image (default ${defaultImage()})`, valueHint: "image" },
  "max-sandboxes": { type: "string", description: `ASH_MAX_SANDBOXES per server (default ${DEFAULT_MAX_SANDBOXES})`, valueHint: "n" },
  "idle-timeout": { type: "string", description: `ASH_IDLE_TIMEOUT_MS, in milliseconds (default ${DEFAULT_IDLE_TIMEOUT_MS})`, valueHint: "ms" },
} as const;

/** Whether the output file is there already (both commands refuse to overwrite it without --force). */
export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
