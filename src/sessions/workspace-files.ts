import { Readable } from "node:stream";
import { displayName, entryPath, listTree, rawName, tarOut, tarOutDone, writeAll, type WorkspaceIo } from "../sandbox/workspace-io";
import { mtimeMsOf, TAR_END, tarHeader, tarPadding } from "../sandbox/tar-stream";

const MAX_LISTED = 10_000;

/**
 * Every regular file of a live workspace, with sizes, as the sandbox user
 * lists it (symlinks are never followed). The server only parses what that
 * process prints.
 */
export async function listWorkspaceFiles(io: WorkspaceIo): Promise<Array<{ path: string; size: number; modifiedAt: string }>> {
  const files: Array<{ path: string; size: number; modifiedAt: string }> = [];
  await listTree(io, (entry) => {
    if (entry.type === "file" && files.length < MAX_LISTED) {
      files.push({ path: displayName(entry.path), size: entry.size, modifiedAt: new Date(mtimeMsOf(entry.mtime)).toISOString() });
    }
  });
  return files.sort((a, b) => a.path.localeCompare(b.path));
}

/**
 * One regular file of a live workspace, read by tar running as the
 * sandbox user (a symlink comes back as a link, never as what it points
 * at); null when there is no such regular file.
 */
export async function readWorkspaceFile(io: WorkspaceIo, path: string, maxBytes = 256 * 1024 * 1024): Promise<Buffer | null> {
  const wanted = rawName(path);
  const { proc, reader } = tarOut(io, [wanted]);
  try {
    let found: Buffer | null = null;
    for (let entry = await reader.next(); entry; entry = await reader.next()) {
      if (found || entry.type !== "file" || entryPath(entry.path) !== wanted) continue;
      if (entry.size > maxBytes) throw new Error(`File ${path} is larger than ${maxBytes} bytes`);
      const parts: Buffer[] = [];
      for (let part = await reader.read(); part; part = await reader.read()) parts.push(part);
      found = Buffer.concat(parts);
    }
    await tarOutDone(proc);
    return found;
  } catch (error) {
    proc.kill();
    await proc.done;
    throw error;
  }
}

/** A file to write into a live workspace; `path` is checked and normalized, relative to it. */
export interface WorkspaceWrite {
  path: string;
  content: Buffer;
  mode: number;
}

/** A checked entry of an uploaded archive, ready to be written again as a fresh tar. */
export type UploadEntry =
  | { type: "file"; path: string; mode: number; content: Buffer }
  | { type: "dir"; path: string; mode: number }
  | { type: "symlink"; path: string; target: string };

/**
 * Writes entries into a live workspace: the server builds a tar stream of
 * entries it has checked, and `tar -x` running as the sandbox user (through
 * the sandbox's io) makes them. The server opens nothing in the workspace.
 * An existing file is replaced; an existing symlink at a file's path is
 * replaced by the file, never followed.
 */
export async function writeWorkspaceEntries(io: WorkspaceIo, entries: UploadEntry[]): Promise<void> {
  const proc = io.run(
    "tar",
    ["-x", "-f", "-", "--numeric-owner", "--no-same-owner", "--same-permissions", "--no-overwrite-dir", "--delay-directory-restore", "--warning=no-timestamp"],
    { stdin: true },
  );
  const stdin = proc.stdin!;
  proc.stdout.resume();
  const mtime = String(Math.floor(Date.now() / 1000));
  let failure: unknown;
  try {
    for (const entry of entries) {
      const path = rawName(entry.path);
      if (entry.type === "file") {
        await writeAll(stdin, tarHeader({ type: "file", path, size: entry.content.length, mode: entry.mode, mtime }));
        await writeAll(stdin, entry.content);
        await writeAll(stdin, tarPadding(entry.content.length));
      } else if (entry.type === "dir") {
        await writeAll(stdin, tarHeader({ type: "dir", path, mode: entry.mode, mtime }));
      } else {
        await writeAll(stdin, tarHeader({ type: "symlink", path, mode: 0o777, mtime, linkpath: rawName(entry.target) }));
      }
    }
    await writeAll(stdin, TAR_END);
  } catch (error) {
    failure = error;
    proc.kill();
  }
  stdin.end();
  const result = await proc.done;
  if (failure) throw failure;
  if (result.code !== 0) {
    const why = result.stderr.trim().split("\n").slice(-3).join("; ");
    throw new WorkspaceWriteError(`Writing into the workspace failed: ${why.replace(/^tar: /gm, "") || `exit ${result.code}`}`);
  }
}

/** tar (as the sandbox user) refused a write: something in the workspace is in the way (a file where a folder is needed, no permission). */
export class WorkspaceWriteError extends Error {
  override name = "WorkspaceWriteError";
}

/** Removes a file or folder (and what is in it) as the sandbox user; false when there was nothing at the path. */
export async function removeWorkspacePath(io: WorkspaceIo, path: string): Promise<boolean> {
  const proc = io.run("rm", ["-r", "--one-file-system", "--", `./${rawName(path)}`]);
  proc.stdout.resume();
  const { code, stderr } = await proc.done;
  if (code === 0) return true;
  if (/No such file or directory/.test(stderr)) return false;
  throw new WorkspaceWriteError(`Removing "${path}" failed: ${stderr.trim().split("\n").slice(-2).join("; ").replace(/^rm: /gm, "")}`);
}

/**
 * One regular file of a live workspace as a stream, read by tar running as
 * the sandbox user; null when there is no such regular file. `tooBig` is
 * called (and its error thrown) when the file is larger than `maxBytes`,
 * before any of it is sent.
 */
export async function openWorkspaceFile(io: WorkspaceIo, path: string, maxBytes: number, tooBig: (size: number) => Error): Promise<{ size: number; stream: Readable } | null> {
  const wanted = rawName(path);
  const { proc, reader } = tarOut(io, [wanted]);
  const fail = async (error: unknown) => {
    proc.kill();
    await proc.done;
    throw error;
  };
  try {
    for (let entry = await reader.next(); entry; entry = await reader.next()) {
      if (entry.type !== "file" || entryPath(entry.path) !== wanted) continue;
      if (entry.size > maxBytes) return await fail(tooBig(entry.size));
      const size = entry.size;
      async function* body() {
        try {
          for (let part = await reader.read(); part; part = await reader.read()) yield part;
          while (await reader.next()) {
            // The rest of the archive (nothing else was asked for).
          }
          await tarOutDone(proc);
        } finally {
          proc.kill();
        }
      }
      return { size, stream: Readable.from(body()) };
    }
    await tarOutDone(proc);
    return null;
  } catch (error) {
    return fail(error);
  }
}
