import { spawn } from "node:child_process";
import { rm } from "node:fs/promises";

/**
 * Removes a folder and everything under it, however deep. fs.rm works with
 * whole paths and fails (ENAMETOOLONG) once a path inside passes PATH_MAX,
 * which a sandbox can build in a few mkdir calls; GNU rm walks relative to
 * each folder and has no such limit. Neither follows symlinks. Only for
 * trees no process writes any more (a destroyed sandbox, a left-over one).
 */
export async function removeTree(path: string): Promise<void> {
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn("rm", ["-rf", "--one-file-system", "--", path], { stdio: ["ignore", "ignore", "pipe"], env: { PATH: "/usr/bin:/bin", LC_ALL: "C" } });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString("utf8");
    });
    child.once("error", () => resolve(null));
    child.once("close", (exit) => resolve(exit));
  });
  if (code === 0) return;
  // No rm on the PATH, or it left something: fs.rm says what.
  await rm(path, { recursive: true, force: true });
}
