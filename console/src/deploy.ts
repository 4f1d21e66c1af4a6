import type { AgentFile } from "../../src/client";

/** A picked or dropped folder, as the files of an agent upload (paths relative to the folder). */
export interface PickedFolder {
  name: string;
  files: Array<{ path: string; file: File }>;
}

/** Files from `<input webkitdirectory>`: each carries its path under the chosen folder. */
export function fromInput(list: FileList): PickedFolder | undefined {
  const files = [...list];
  if (files.length === 0) return undefined;
  const first = (files[0].webkitRelativePath || files[0].name).split("/")[0];
  return {
    name: first,
    files: files.map((file) => {
      const parts = (file.webkitRelativePath || file.name).split("/");
      return { path: parts.length > 1 ? parts.slice(1).join("/") : parts[0], file };
    }),
  };
}

/** Files from a drop: one folder (walked whole), or loose files. */
export async function fromDrop(transfer: DataTransfer): Promise<PickedFolder | undefined> {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry?.()).filter((e): e is FileSystemEntry => !!e);
  if (entries.length === 1 && entries[0].isDirectory) {
    const files: PickedFolder["files"] = [];
    await walk(entries[0] as FileSystemDirectoryEntry, "", files);
    return { name: entries[0].name, files };
  }
  const loose = [...transfer.files];
  if (loose.length === 0) return undefined;
  return { name: "", files: loose.map((file) => ({ path: file.name, file })) };
}

async function walk(dir: FileSystemDirectoryEntry, prefix: string, out: PickedFolder["files"]): Promise<void> {
  const reader = dir.createReader();
  // readEntries answers in batches until an empty one.
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) return;
    for (const entry of batch) {
      const path = prefix + entry.name;
      if (entry.isDirectory) await walk(entry as FileSystemDirectoryEntry, `${path}/`, out);
      else out.push({ path, file: await new Promise<File>((resolve, reject) => (entry as FileSystemFileEntry).file(resolve, reject)) });
    }
  }
}

/** The upload's files, base64 as the API takes them. */
export async function agentFiles(folder: PickedFolder): Promise<AgentFile[]> {
  return Promise.all(folder.files.map(async ({ path, file }) => ({ path, content: base64(new Uint8Array(await file.arrayBuffer())) })));
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let at = 0; at < bytes.length; at += 0x8000) binary += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
  return btoa(binary);
}
