import { displayName, entryPath, listTree, rawName, tarOut, tarOutDone, type WorkspaceIo } from "../sandbox/workspace-io";
import { mtimeMsOf } from "../sandbox/tar-stream";

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
