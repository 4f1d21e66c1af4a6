import { unzipSync } from "fflate";
import type { AgentFile } from "../../src/client";

/** Unpacked, a zip may hold at most this much (the server checks each file again). */
const MAX_UNZIPPED_BYTES = 64 * 1024 * 1024;

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

/**
 * The files of a zip, unpacked here in the browser. A zip whose entries all sit
 * in one folder (how most tools make them) gives that folder's contents.
 */
export async function fromZip(zip: File): Promise<PickedFolder> {
  let total = 0;
  let tooBig = false;
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(new Uint8Array(await zip.arrayBuffer()), {
      filter: (entry) => {
        if (entry.name.endsWith("/")) return false;
        total += entry.originalSize;
        if (total > MAX_UNZIPPED_BYTES) tooBig = true;
        return !tooBig;
      },
    });
  } catch {
    throw new Error(`${zip.name} is not a zip file this console can read.`);
  }
  if (tooBig) throw new Error(`${zip.name} unpacks to more than ${MAX_UNZIPPED_BYTES / 2 ** 20} MiB.`);
  const names = Object.keys(entries);
  const top = names[0]?.split("/")[0] ?? "";
  const strip = names.length > 0 && names.every((n) => n.startsWith(`${top}/`));
  return {
    name: strip ? top : zip.name.replace(/\.zip$/i, ""),
    files: names.map((n) => ({ path: strip ? n.slice(top.length + 1) : n, file: new File([new Uint8Array(entries[n]!)], n.split("/").pop()!) })),
  };
}

/** Files from a drop: one folder (walked whole), a zip, or loose files. */
export async function fromDrop(transfer: DataTransfer): Promise<PickedFolder | undefined> {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry?.()).filter((e): e is FileSystemEntry => !!e);
  if (entries.length === 1 && entries[0].isDirectory) {
    const files: PickedFolder["files"] = [];
    await walk(entries[0] as FileSystemDirectoryEntry, "", files);
    return { name: entries[0].name, files };
  }
  const loose = [...transfer.files];
  if (loose.length === 0) return undefined;
  if (loose.length === 1 && /\.zip$/i.test(loose[0]!.name)) return fromZip(loose[0]!);
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
