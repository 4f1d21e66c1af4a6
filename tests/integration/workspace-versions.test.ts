import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, cpSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Readable } from "node:stream";
// @ts-expect-error s3rver ships no type declarations
import S3rver from "s3rver";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { createSnapshotStore, createVersionStore, SnapshotCorruptError, SnapshotTooLargeError, type VersionStore } from "../../src/snapshots";
import { ioProcessOf, trustedFolderIo } from "../../src/sandbox/workspace-io";
import { changeTimeMarginMs } from "../../src/sandbox/timestamps";
import { TAR_END, tarHeader, tarPadding } from "../../src/sandbox/tar-stream";

const root = mkdtempSync(join(tmpdir(), "ash-versions-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let counter = 0;
let dataDir: string;
beforeEach(() => {
  dataDir = join(root, `data-${++counter}`);
  mkdirSync(dataDir);
});
const fresh = (name: string) => {
  const dir = join(root, `${name}-${++counter}`);
  mkdirSync(dir);
  return dir;
};
const sh = (command: string, cwd: string) => execFileSync("/bin/sh", ["-c", command], { cwd });

/**
 * Every entry under a folder as find sees it (NUL-separated, so any byte in
 * a name is fine): type, size, mtime in ns, mode, link count, name, link target.
 */
function describeTree(dir: string, { links = true } = {}): string[] {
  const out = execFileSync("find", [".", "-mindepth", "1", "-printf", `%y %s %T@ %m ${links ? "%n" : "-"} %P -> %l\\0`], { cwd: dir, maxBuffer: 1 << 28 });
  return out.toString("latin1").split("\0").filter(Boolean).sort();
}
/** Plus every file's bytes. */
function contentOf(dir: string): string {
  return execFileSync("/bin/sh", ["-c", "find . -type f -print0 | sort -z | xargs -0 -r sha256sum"], { cwd: dir, maxBuffer: 1 << 28 }).toString("latin1");
}

/** A workspace meant to trip a store: names of any bytes, long names, links of every kind, modes, ns mtimes, a fifo. */
function hostileWorkspace(): string {
  const ws = fresh("ws");
  mkdirSync(join(ws, "src", "deep", "er"), { recursive: true });
  mkdirSync(join(ws, "empty-dir"));
  mkdirSync(join(ws, "private"), { mode: 0o700 });
  chmodSync(join(ws, "private"), 0o700);
  mkdirSync(join(ws, "sticky"));
  chmodSync(join(ws, "sticky"), 0o1777);
  writeFileSync(join(ws, "blob.bin"), randomBytes(9_000_000));
  writeFileSync(join(ws, "src", "deep", "er", "data.bin"), Buffer.from([0, 255, 0, 13, 10, 0]));
  writeFileSync(join(ws, "run.sh"), "#!/bin/sh\necho run\n");
  chmodSync(join(ws, "run.sh"), 0o755);
  writeFileSync(join(ws, "private", "key"), "secret");
  chmodSync(join(ws, "private", "key"), 0o600);
  writeFileSync(join(ws, "empty.txt"), "");
  writeFileSync(join(ws, "we:ird?name.."), "odd");
  writeFileSync(join(ws, "x".repeat(255)), "long name");
  // Names that are not UTF-8, with a newline, a tab and a backslash.
  sh(`printf 'a' > "$(printf 'bad-\\377\\376')" && printf 'b' > "$(printf 'nl\\nname\\ttab\\\\')" && mkdir "$(printf 'dir-\\300')" && printf 'c' > "$(printf 'dir-\\300/f\\376')"`, ws);
  symlinkSync("src/deep/er/data.bin", join(ws, "link-inside"));
  symlinkSync(join(ws, "run.sh"), join(ws, "link-absolute-inside"));
  symlinkSync("/etc/hostname", join(ws, "link-outside"));
  symlinkSync("../../../../etc", join(ws, "src", "escape"));
  symlinkSync("no-such-file", join(ws, "dangling"));
  linkSync(join(ws, "run.sh"), join(ws, "src", "hard-run.sh"));
  linkSync(join(ws, "blob.bin"), join(ws, "blob-again.bin"));
  sh("mkfifo pipe", ws);
  // Nanosecond mtimes, set last (folders too).
  sh(`touch -h -d @1700000000.123456789 run.sh link-inside && touch -d @1600000000.987654321 src/deep && touch -d @1500000000.5 empty-dir`, ws);
  return ws;
}
/** What a restore of hostileWorkspace() must equal: everything but the entries the store skips (the symlink that is rewritten differs in target). */
function expectedOf(ws: string): string[] {
  return describeTree(ws).filter((line) => !/ (link-outside|src\/escape|pipe|link-absolute-inside) -> /.test(line));
}

async function restoreInto(store: VersionStore, id: string): Promise<string> {
  const target = fresh("restored");
  await store.restore(id, trustedFolderIo(target));
  return target;
}

describe("workspace versions (fs objects)", () => {
  it("round-trips a hostile tree exactly: bytes, modes, ns mtimes, odd names, links, empty folders; notes what it skips", async () => {
    const ws = hostileWorkspace();
    const store = createVersionStore({ dataDir });
    const notes: string[] = [];
    const version = await store.save(trustedFolderIo(ws), { onNote: (line) => notes.push(line) });
    expect(version.skipped.sort()).toEqual(["link-outside: a symlink leading outside the workspace", "pipe: a named pipe", "src/escape: a symlink leading outside the workspace"]);
    expect(notes.some((line) => line.includes('"pipe": a named pipe'))).toBe(true);
    // blob.bin and its hard link are stored once.
    expect(version.bytes).toBe(9_000_000 + 6 + 19 + 6 + 3 + 9 + 1 + 1 + 1);
    expect(version.fileCount).toBe(12);

    const target = await restoreInto(store, version.id);
    expect(describeTree(target).filter((line) => !line.includes(" link-absolute-inside -> "))).toEqual(expectedOf(ws));
    expect(contentOf(target)).toBe(contentOf(ws));
    // An absolute link into the workspace comes back relative; hard links come back as links.
    expect(readFileSync(join(target, "link-absolute-inside"), "utf8")).toBe("#!/bin/sh\necho run\n");
    expect(statSync(join(target, "src", "hard-run.sh")).ino).toBe(statSync(join(target, "run.sh")).ino);
    expect(statSync(join(target, "blob-again.bin")).ino).toBe(statSync(join(target, "blob.bin")).ino);
    expect(existsSync(join(target, "pipe"))).toBe(false);

    // The same version read without restoring it.
    expect(await store.read(version.id, "src/deep/er/data.bin")).toEqual(Buffer.from([0, 255, 0, 13, 10, 0]));
    expect((await store.read(version.id, "src/hard-run.sh"))?.toString()).toBe("#!/bin/sh\necho run\n");
    expect(await store.read(version.id, "missing")).toBeNull();
    await expect(store.read(version.id, "../x")).rejects.toThrow(/Invalid snapshot path/);
    const list = await store.list(version.id);
    expect(list.find((e) => e.path === "run.sh")).toMatchObject({ type: "file", size: 19, mode: 0o755, mtimeMs: 1_700_000_000_123 });
    expect(list.find((e) => e.path === "src/hard-run.sh")).toMatchObject({ type: "file", size: 19 });
    expect(list.find((e) => e.path === "empty-dir")).toMatchObject({ type: "dir" });
    expect(list.find((e) => e.path === "link-inside")).toMatchObject({ type: "symlink", target: "src/deep/er/data.bin" });
    expect(list.some((e) => e.path === "link-outside")).toBe(false);

    // The archive is what restore extracts.
    const viaArchive = fresh("from-archive");
    const chunks: Buffer[] = [];
    for await (const chunk of await store.archive(version.id)) chunks.push(chunk as Buffer);
    execFileSync("tar", ["-x", "-f", "-", "--delay-directory-restore"], { cwd: viaArchive, input: Buffer.concat(chunks) });
    expect(contentOf(viaArchive)).toBe(contentOf(ws));

    expect((await store.objectsOf(version.id)).sort()).toEqual([...version.objects].sort());
    expect(version.objects.filter((key) => key.startsWith("packs/")).length).toBe(2);
  });

  it("saves incrementally: nothing new when nothing changed, only the changed files' bytes when 10 changed", async () => {
    const ws = fresh("ws");
    for (let d = 0; d < 10; d++) {
      mkdirSync(join(ws, `d${d}`));
      for (let f = 0; f < 50; f++) writeFileSync(join(ws, `d${d}`, `f${f}`), randomBytes(2000 + d * 50 + f));
    }
    const store = createVersionStore({ dataDir });
    const written: string[][] = [];
    const onWrite = async (keys: string[]) => void written.push(keys);
    const first = await store.save(trustedFolderIo(ws), { onWrite });
    expect(written.flat().sort()).toEqual([...first.objects].sort());

    written.length = 0;
    const same = await store.save(trustedFolderIo(ws), { base: first.id, onWrite });
    expect(same.id).toBe(first.id);
    expect(written).toEqual([]);
    expect(same).toMatchObject({ changedFiles: 0, changedBytes: 0, fileCount: 500 });

    let changedBytes = 0;
    for (let d = 0; d < 10; d++) {
      const bytes = randomBytes(3000);
      changedBytes += bytes.length;
      writeFileSync(join(ws, `d${d}`, `f${d}`), bytes);
    }
    const next = await store.save(trustedFolderIo(ws), { base: first.id, onWrite });
    expect(next).toMatchObject({ changedFiles: 10, changedBytes });
    const keys = written.flat();
    const packs = keys.filter((key) => key.startsWith("packs/"));
    expect(packs.length).toBe(1);
    const [, id] = packs[0]!.split("/");
    expect(statSync(join(dataDir, "store", "packs", id!.slice(0, 2), id!)).size).toBe(changedBytes);
    // The ten changed folders and the root: nothing else is written.
    expect(keys.filter((key) => key.startsWith("trees/")).length).toBe(11);
    // The rest still comes from the first save's packs.
    expect(next.objects.filter((key) => key.startsWith("packs/")).sort()).toEqual([...first.objects.filter((key) => key.startsWith("packs/")), packs[0]!].sort());
    expect(contentOf(await restoreInto(store, next.id))).toBe(contentOf(ws));
    expect(contentOf(await restoreInto(store, first.id))).not.toBe(contentOf(ws));
  });

  it("lists only what changed since the folder's last save: files read, changed folders listed again, new ones listed whole, the rest kept unwalked", async () => {
    const ws = fresh("ws");
    for (let d = 0; d < 5; d++) {
      mkdirSync(join(ws, `d${d}`));
      for (let f = 0; f < 20; f++) writeFileSync(join(ws, `d${d}`, `f${f}`), randomBytes(1000 + f));
    }
    symlinkSync("d0/f0", join(ws, "link"));
    // Written long before the first save: their size and mtime are trusted by the next saves.
    sh("find . -exec touch -h -d @1700000000 {} +", ws);
    // The margin the server uses for folders here; the first save begins past it.
    const changedMarginMs = await changeTimeMarginMs(root);
    await new Promise((resolve) => setTimeout(resolve, changedMarginMs + 20));
    const store = createVersionStore({ dataDir }, { changedMarginMs });
    const io = trustedFolderIo(ws);
    // The version restores as the folder is, and names exactly the objects, files and bytes that a
    // walk of the whole folder from it names.
    const same = async (id: string) => {
      const target = await restoreInto(store, id);
      expect(describeTree(target)).toEqual(describeTree(ws));
      expect(contentOf(target)).toBe(contentOf(ws));
    };
    const counted = (v: { fileCount: number; bytes: number; objects: string[] }) => ({ fileCount: v.fileCount, bytes: v.bytes, objects: [...v.objects].sort() });
    const exactly = async (version: { id: string; fileCount: number; bytes: number; objects: string[] }) => {
      await same(version.id);
      const whole = await store.save(trustedFolderIo(ws), { base: version.id });
      expect(whole).toMatchObject({ id: version.id, walked: true });
      expect(counted(version)).toEqual(counted(whole));
    };
    const first = await store.save(io);
    expect(first.walked).toBe(true);

    // Nothing changed: nothing is listed; the same version with the same objects.
    const unchanged = await store.save(io, { base: first.id });
    expect(unchanged).toMatchObject({ id: first.id, walked: false, changedFiles: 0, fileCount: 100, bytes: first.bytes });
    expect([...unchanged.objects].sort()).toEqual([...first.objects].sort());
    expect(await store.verify(first.id, io)).toBe(true);

    // A file changed in place and a mode changed: one file read, only their folders and the root written.
    writeFileSync(join(ws, "d1", "f3"), randomBytes(5000));
    chmodSync(join(ws, "d2", "f4"), 0o700);
    expect(await store.verify(first.id, io)).toBe(false);
    const written: string[] = [];
    const next = await store.save(io, { base: first.id, onWrite: async (keys) => void written.push(...keys) });
    expect(next).toMatchObject({ walked: false, changedFiles: 1, changedBytes: 5000, fileCount: 100, bytes: first.bytes + 5000 - 1003 });
    expect(written.filter((key) => key.startsWith("trees/")).length).toBe(3);
    expect((await store.objectsOf(next.id)).sort()).toEqual([...next.objects].sort());
    expect(await store.verify(next.id, io)).toBe(true);
    await exactly(next);

    // Written again at once with the same size and the same mtime (as within one clock tick): it is
    // read again, not trusted by its size and mtime.
    const stamp = execFileSync("stat", ["-c", "%Y.%y", join(ws, "d1", "f3")]).toString().trim();
    const exact = `@${stamp.split(".")[0]}.${stamp.split(".").at(-1)!.slice(0, 9)}`;
    writeFileSync(join(ws, "d1", "f3"), randomBytes(5000));
    sh(`touch -d ${exact} d1/f3`, ws);
    const racy = await store.save(io, { base: next.id });
    expect(racy).toMatchObject({ walked: false, changedFiles: 1 });
    await exactly(racy);

    // A folder's entries changed: the first save's folders were listed after its tar stream, so it is listed again (one level).
    writeFileSync(join(ws, "d3", "new"), "new");
    const listedFolder = await store.save(io, { base: racy.id });
    expect(listedFolder).toMatchObject({ walked: false, changedFiles: 1 });
    await exactly(listedFolder);
    // A changed folder is listed again (one level), and one made or moved there is listed whole.
    mkdirSync(join(ws, "elsewhere", "S"), { recursive: true });
    writeFileSync(join(ws, "elsewhere", "S", "y"), "from elsewhere");
    await new Promise((resolve) => setTimeout(resolve, changedMarginMs + 20));
    let last = (await store.save(io, { base: listedFolder.id })).id;
    const changes: Array<[string, () => void, boolean]> = [
      ["an added file", () => writeFileSync(join(ws, "d3", "newer"), "newer"), false],
      ["a removed file", () => rmSync(join(ws, "d4", "f1")), false],
      ["a moved folder", () => execFileSync("mv", [join(ws, "d0"), join(ws, "d2", "moved")]), false],
      ["a file replaced by a link", () => (rmSync(join(ws, "d1", "f5")), symlinkSync("f6", join(ws, "d1", "f5"))), false],
      ["a new folder of files", () => (mkdirSync(join(ws, "made", "deep"), { recursive: true }), writeFileSync(join(ws, "made", "deep", "z"), "z")), false],
      ["a folder's mode", () => chmodSync(join(ws, "d3"), 0o700), false],
      // Two folders with the same (no) entries share one tree: removing one keeps the tree for the other.
      ["two empty folders", () => (mkdirSync(join(ws, "e1")), mkdirSync(join(ws, "e2"))), false],
      ["(one of them removed)", () => rmSync(join(ws, "e1"), { recursive: true }), false],
      // Its old contents gone, another folder moved in under its name, with a sub-folder of the same name as before.
      ["a folder replaced by one moved in", () => (mkdirSync(join(ws, "d4", "S")), writeFileSync(join(ws, "d4", "S", "x"), "x")), false],
      ["(the same, second step)", () => (rmSync(join(ws, "d4"), { recursive: true }), execFileSync("mv", [join(ws, "elsewhere"), join(ws, "d4")])), false],
    ];
    for (const [what, change, walks] of changes) {
      change();
      const version = await store.save(io, { base: last });
      expect(version.walked, what).toBe(walks);
      await exactly(version);
      last = version.id;
    }
    // A link leading outside, in a folder listed again: left out, and noted once.
    symlinkSync("/etc/hostname", join(ws, "d1", "out"));
    const notes: string[] = [];
    const withLink = await store.save(io, { base: last, onNote: (line) => notes.push(line) });
    expect(withLink).toMatchObject({ walked: false, skipped: ["d1/out: a symlink leading outside the workspace"] });
    expect(notes.filter((line) => line.includes("d1/out"))).toHaveLength(1);
    expect((await store.list(withLink.id)).some((entry) => entry.path === "d1/out")).toBe(false);
    rmSync(join(ws, "d1", "out"));
    const unlinked = await store.save(io, { base: withLink.id });
    await exactly(unlinked);
    last = unlinked.id;
    // A file with a second name: everything is walked, so the second name is kept as a link.
    linkSync(join(ws, "d3", "f2"), join(ws, "d3", "f2-again"));
    const linked = await store.save(io, { base: last });
    expect(linked.walked).toBe(true);
    await exactly(linked);
    last = linked.id;
    expect(readFileSync(join(await restoreInto(store, last), "d4", "S", "y"), "utf8")).toBe("from elsewhere");
    expect(existsSync(join(await restoreInto(store, last), "d4", "S", "x"))).toBe(false);
    // Changes within the margin before a save are listed again by the next one; past it, nothing is.
    await new Promise((resolve) => setTimeout(resolve, changedMarginMs + 20));
    expect(await store.save(io, { base: last })).toMatchObject({ id: last, walked: true });
    expect(await store.save(io, { base: last })).toMatchObject({ id: last, walked: false, changedFiles: 0 });

    // Nothing changed, but more than the limit: refused like any save over it.
    await expect(store.save(io, { base: last, maxBytes: 1000 })).rejects.toThrow(SnapshotTooLargeError);

    // From a base other than the folder's last save, or into a folder just restored: everything is walked.
    expect((await store.save(io, { base: first.id })).walked).toBe(true);
    const target = fresh("restored");
    const restoredIo = trustedFolderIo(target);
    await store.save(restoredIo).then((empty) => expect(empty.fileCount).toBe(0));
    await store.restore(last, restoredIo);
    expect(await store.save(restoredIo, { base: last })).toMatchObject({ id: last, walked: true });
  });

  it("does not trust a first save's folder that was swapped while it read the workspace", async () => {
    const ws = fresh("ws");
    for (const [folder, text] of [["P", "A"], ["Q", "B"]]) {
      mkdirSync(join(ws, folder, "sub"), { recursive: true });
      writeFileSync(join(ws, folder, "sub", "x"), text);
    }
    const changedMarginMs = await changeTimeMarginMs(root);
    await new Promise((resolve) => setTimeout(resolve, changedMarginMs + 20));
    const store = createVersionStore({ dataDir }, { changedMarginMs });
    // The two folders trade places after the tar stream read them and before the save lists its folders
    // (the sandbox's own processes run on while it saves): P now is the folder whose sub/x says "B".
    const plain = trustedFolderIo(ws);
    let swaps = 0;
    const io = {
      root: plain.root,
      run(command: string, args: string[], options?: { stdin?: boolean }) {
        if (command === "find" && args.includes("-type") && swaps++ === 0) {
          for (const [from, to] of [["P", "T"], ["Q", "P"], ["T", "Q"]]) execFileSync("mv", [join(ws, from!), join(ws, to!)]);
        }
        return plain.run(command, args, options);
      },
    };
    const first = await store.save(io);
    expect(swaps).toBe(1);
    expect(readFileSync(join(await restoreInto(store, first.id), "P", "sub", "x"), "utf8")).toBe("A");
    await new Promise((resolve) => setTimeout(resolve, changedMarginMs + 20));
    // Nothing changed after: the moved folders are listed whole, so the version says what is there now.
    const next = await store.save(io, { base: first.id });
    expect(next.walked).toBe(false);
    const target = await restoreInto(store, next.id);
    expect(readFileSync(join(target, "P", "sub", "x"), "utf8")).toBe("B");
    expect(readFileSync(join(target, "Q", "sub", "x"), "utf8")).toBe("A");
    expect(contentOf(target)).toBe(contentOf(ws));
  });

  it("restores files of many big pieces across more packs than it holds at once, byte for byte, and stops at a damaged one", async () => {
    const ws = fresh("ws");
    // 17 pieces in 9 packs: packs read early are filled again with later ones while the restore runs.
    writeFileSync(join(ws, "a.bin"), randomBytes(66 * 2 ** 20 + 123));
    writeFileSync(join(ws, "b.txt"), "between");
    mkdirSync(join(ws, "z"));
    writeFileSync(join(ws, "z", "c.bin"), randomBytes(5 * 2 ** 20));
    const store = createVersionStore({ dataDir });
    const version = await store.save(trustedFolderIo(ws));
    const target = await restoreInto(store, version.id);
    expect(contentOf(target)).toBe(contentOf(ws));
    expect(describeTree(target)).toEqual(describeTree(ws));

    // One byte of one of those packs changed: the piece is checked before it is written, and the restore fails.
    const packs = readdirSync(join(dataDir, "store", "packs"), { recursive: true }) as string[];
    const files = packs.map((p) => join(dataDir, "store", "packs", p)).filter((p) => statSync(p).isFile() && statSync(p).size > 4 * 2 ** 20);
    expect(files.length).toBeGreaterThan(4);
    const bytes = readFileSync(files[3]!);
    bytes[1000] ^= 0xff;
    writeFileSync(files[3]!, bytes);
    const damaged = fresh("restored");
    await expect(createVersionStore({ dataDir }).restore(version.id, trustedFolderIo(damaged))).rejects.toThrow(SnapshotCorruptError);
  });

  it("counts as changed only files whose bytes changed, not files read again because they were written close to the last save", async () => {
    const ws = fresh("ws");
    mkdirSync(join(ws, "d"));
    for (let f = 0; f < 5; f++) writeFileSync(join(ws, "d", `f${f}`), `first ${f}`);
    writeFileSync(join(ws, "a"), "alone");
    linkSync(join(ws, "a"), join(ws, "also-a"));
    // A margin longer than the test: every file written in it has a change time the next save must
    // distrust, as a file the agent wrote just before a turn's save has for the save after.
    const store = createVersionStore({ dataDir }, { changedMarginMs: 600_000 });
    const io = trustedFolderIo(ws);
    const first = await store.save(io);
    expect(first).toMatchObject({ changedFiles: 6, fileCount: 7 });

    const again = await store.save(io, { base: first.id });
    expect(again).toMatchObject({ id: first.id, changedFiles: 0, changedBytes: 0 });

    writeFileSync(join(ws, "d", "f2"), "second 2");
    writeFileSync(join(ws, "d", "f3"), "first 3");
    const edited = await store.save(io, { base: again.id });
    expect(edited).toMatchObject({ changedFiles: 1, changedBytes: "second 2".length });
    // The whole-tree walk (as after a restart) counts the same way, hard-linked files included.
    const walked = await store.save(trustedFolderIo(ws), { base: edited.id });
    expect(walked).toMatchObject({ id: edited.id, walked: true, changedFiles: 0, changedBytes: 0 });
    writeFileSync(join(ws, "a"), "changed through one of its names");
    const linkChanged = await store.save(trustedFolderIo(ws), { base: walked.id });
    expect(linkChanged).toMatchObject({ walked: true, changedFiles: 1 });
  });

  it("stores the bytes of a folder moved since the last save once: a save that lists changes finds them in the base", async () => {
    const ws = fresh("ws");
    mkdirSync(join(ws, "big"));
    for (let f = 0; f < 4; f++) writeFileSync(join(ws, "big", `f${f}`), randomBytes(300_000));
    writeFileSync(join(ws, "kept.txt"), "kept");
    const changedMarginMs = await changeTimeMarginMs(root);
    await new Promise((resolve) => setTimeout(resolve, changedMarginMs + 20));
    const store = createVersionStore({ dataDir }, { changedMarginMs });
    const io = trustedFolderIo(ws);
    const first = await store.save(io);
    mkdirSync(join(ws, "moved"));
    execFileSync("mv", [join(ws, "big"), join(ws, "moved", "big")]);
    const written: string[] = [];
    const next = await store.save(io, { base: first.id, onWrite: async (keys) => void written.push(...keys) });
    expect(next).toMatchObject({ walked: false, changedFiles: 4, fileCount: 5, bytes: first.bytes });
    // The moved files' bytes are the first save's: no pack is written, only the changed folders' trees.
    expect(written.filter((key) => key.startsWith("packs/"))).toEqual([]);
    expect(next.objects.filter((key) => key.startsWith("packs/")).sort()).toEqual(first.objects.filter((key) => key.startsWith("packs/")).sort());
    expect(contentOf(await restoreInto(store, next.id))).toBe(contentOf(ws));
  });

  it("walks everything when the wall clock was set back since the folder's last save", async () => {
    const ws = fresh("ws");
    writeFileSync(join(ws, "a.txt"), "alpha");
    await new Promise((resolve) => setTimeout(resolve, 100));
    let stepBack = 0;
    const clocks = { wall: () => Date.now() - stepBack, monotonic: () => performance.now() };
    const store = createVersionStore({ dataDir }, { changedMarginMs: 50, clocks });
    const io = trustedFolderIo(ws);
    const first = await store.save(io);
    expect((await store.save(io, { base: first.id })).walked).toBe(false);
    // Set back by a minute: a change made now could carry a change time before the last save's.
    stepBack = 60_000;
    const walked = await store.save(io, { base: first.id });
    expect(walked).toMatchObject({ id: first.id, walked: true });
  });

  it("reads the files a turn added in batches as their folders close, and keeps hard links as links across them", async () => {
    const ws = fresh("ws");
    writeFileSync(join(ws, "kept.txt"), "kept");
    writeFileSync(join(ws, "edited.txt"), "before");
    const store = createVersionStore({ dataDir });
    const first = await store.save(trustedFolderIo(ws));
    // More new files than one batch reads (4,096), in 30 folders; two names of one file in different folders.
    for (let d = 0; d < 30; d++) {
      mkdirSync(join(ws, `pkg${d}`));
      for (let f = 0; f < 300; f++) writeFileSync(join(ws, `pkg${d}`, `m${f}.js`), `module ${d}/${f} ${randomBytes(8).toString("hex")}`);
    }
    writeFileSync(join(ws, "pkg0", "shared.bin"), randomBytes(5000));
    linkSync(join(ws, "pkg0", "shared.bin"), join(ws, "pkg29", "shared-link.bin"));
    writeFileSync(join(ws, "edited.txt"), "after");
    // The real io, with its tar runs counted.
    const io = trustedFolderIo(ws);
    let tars = 0;
    const counted = { root: io.root, run: (command: string, args: string[], options?: { stdin?: boolean }) => (command === "tar" && tars++, io.run(command, args, options)) };
    const next = await store.save(counted, { base: first.id });
    expect(next.changedFiles).toBe(9000 + 1 + 1);
    // 9,001 single-name files in batches of at most 4,096, then the two names of the linked file together.
    expect(tars).toBe(4);
    const restored = await restoreInto(store, next.id);
    expect(describeTree(restored)).toEqual(describeTree(ws));
    expect(contentOf(restored)).toBe(contentOf(ws));
    expect(statSync(join(restored, "pkg0", "shared.bin")).ino).toBe(statSync(join(restored, "pkg29", "shared-link.bin")).ino);
    // A save from that version with nothing changed is the same version; the linked file is read again (to find its links) but its bytes did not change.
    expect(await store.save(trustedFolderIo(ws), { base: next.id })).toMatchObject({ id: next.id, changedFiles: 0 });
  });

  it("restores a version of more packs than a restore keeps in memory exactly, reading packs into buffers it fills again", async () => {
    const ws = fresh("ws");
    // Nine folders of a small file and 8 MiB: each small file lands in a pack of its own; a restore holds six.
    for (let k = 0; k < 9; k++) {
      mkdirSync(join(ws, `p${k}`));
      writeFileSync(join(ws, `p${k}`, "a.txt"), `small file ${k} ${randomBytes(8).toString("hex")}`);
      writeFileSync(join(ws, `p${k}`, "b.bin"), randomBytes(8 << 20));
    }
    // Last, copies of the nine small files: one batch of the archive holds pieces of nine packs, and the
    // first of those packs leaves (and its buffer is filled again) before that batch is written.
    mkdirSync(join(ws, "zz"));
    for (let k = 0; k < 9; k++) cpSync(join(ws, `p${k}`, "a.txt"), join(ws, "zz", `copy-${k}.txt`));
    const store = createVersionStore({ dataDir });
    const version = await store.save(trustedFolderIo(ws));
    const packs = (await store.objectsOf(version.id)).filter((key) => key.startsWith("packs/"));
    expect(packs.length).toBeGreaterThanOrEqual(9);
    for (let round = 0; round < 2; round++) {
      const restored = await restoreInto(store, version.id);
      expect(describeTree(restored)).toEqual(describeTree(ws));
      expect(contentOf(restored)).toBe(contentOf(ws));
    }
  });

  it("dedupes identical bytes across versions and across two forks saved from one base", async () => {
    const ws = fresh("ws");
    mkdirSync(join(ws, "lib"));
    const shared = randomBytes(200_000);
    writeFileSync(join(ws, "lib", "a.bin"), shared);
    writeFileSync(join(ws, "lib", "b.bin"), randomBytes(100_000));
    const store = createVersionStore({ dataDir });
    const base = await store.save(trustedFolderIo(ws));

    // A copy in a new folder and a moved folder: no new bytes.
    mkdirSync(join(ws, "copy"));
    writeFileSync(join(ws, "copy", "a.bin"), shared);
    sh("mv lib lib2", ws);
    const written: string[][] = [];
    const moved = await store.save(trustedFolderIo(ws), { base: base.id, onWrite: async (keys) => void written.push(keys) });
    // Read again (new paths), but every byte is found in the base.
    expect(moved.changedBytes).toBe(500_000);
    expect(written.flat().filter((key) => key.startsWith("packs/"))).toEqual([]);

    // Two forks of one version: each stores only what it changed; both share the base's packs.
    const forkA = await restoreInto(store, base.id);
    const forkB = await restoreInto(store, base.id);
    writeFileSync(join(forkA, "a-only.txt"), "A");
    writeFileSync(join(forkB, "b-only.txt"), "B");
    writeFileSync(join(forkB, "lib", "copied.bin"), shared);
    const writesA: string[] = [];
    const writesB: string[] = [];
    const a = await store.save(trustedFolderIo(forkA), { base: base.id, onWrite: async (keys) => void writesA.push(...keys) });
    const b = await store.save(trustedFolderIo(forkB), { base: base.id, onWrite: async (keys) => void writesB.push(...keys) });
    const basePacks = base.objects.filter((key) => key.startsWith("packs/"));
    for (const version of [a, b]) for (const pack of basePacks) expect(version.objects).toContain(pack);
    const newPack = (keys: string[]) => keys.filter((key) => key.startsWith("packs/")).map((key) => statSync(join(dataDir, "store", "packs", key.slice(6, 8), key.slice(6))).size);
    expect(newPack(writesA)).toEqual([1]);
    expect(newPack(writesB)).toEqual([1]);
    expect(contentOf(await restoreInto(store, b.id))).toBe(contentOf(forkB));
  });

  it("verifies a live folder against a version: true when it is the version, false after any change", async () => {
    const ws = fresh("ws");
    mkdirSync(join(ws, "sub"));
    writeFileSync(join(ws, "sub", "a.txt"), "alpha");
    writeFileSync(join(ws, "b.txt"), "beta");
    symlinkSync("sub/a.txt", join(ws, "link"));
    const store = createVersionStore({ dataDir });
    const version = await store.save(trustedFolderIo(ws));
    expect(await store.verify(version.id, trustedFolderIo(ws))).toBe(true);
    expect(await store.verify(version.id, trustedFolderIo(await restoreInto(store, version.id)))).toBe(true);

    const cases: Array<[string, (dir: string) => void]> = [
      ["a modified file", (dir) => writeFileSync(join(dir, "sub", "a.txt"), "alpha2")],
      ["a file touched", (dir) => sh("touch -d @1000000000 b.txt", dir)],
      ["an added file", (dir) => sh("touch -r sub sub/new && touch -r . new2 && rm new2 && touch -d \"$(date -r . +@%s.%N)\" . ", dir)],
      ["a removed file", (dir) => rmSync(join(dir, "b.txt"))],
      ["a changed mode", (dir) => chmodSync(join(dir, "b.txt"), 0o600)],
      ["a retargeted link", (dir) => (rmSync(join(dir, "link")), symlinkSync("b.txt", join(dir, "link")))],
      ["an added empty folder", (dir) => mkdirSync(join(dir, "sub", "more"))],
    ];
    for (const [what, change] of cases) {
      const dir = await restoreInto(store, version.id);
      change(dir);
      expect(await store.verify(version.id, trustedFolderIo(dir)), what).toBe(false);
    }
  });

  it("detects damaged and missing objects instead of returning wrong bytes", async () => {
    const ws = fresh("ws");
    writeFileSync(join(ws, "a.txt"), "alpha");
    mkdirSync(join(ws, "sub"));
    writeFileSync(join(ws, "sub", "b.txt"), "beta");
    const store = createVersionStore({ dataDir });
    const version = await store.save(trustedFolderIo(ws));
    const pathOf = (key: string) => join(dataDir, "store", key.split("/")[0]!, key.split("/")[1]!.slice(0, 2), key.split("/")[1]!);
    const pack = version.objects.find((key) => key.startsWith("packs/"))!;
    const bytes = readFileSync(pathOf(pack));
    writeFileSync(pathOf(pack), Buffer.from(bytes.toString("latin1").replace("alpha", "ALPHA"), "latin1"));
    await expect(store.read(version.id, "a.txt")).rejects.toThrow(SnapshotCorruptError);
    await expect(store.restore(version.id, trustedFolderIo(fresh("restored")))).rejects.toThrow(SnapshotCorruptError);

    // A tree whose bytes do not match its id (a fresh store: no cache).
    const sub = version.objects.find((key) => key.startsWith("trees/") && key !== `trees/${version.id}`)!;
    writeFileSync(pathOf(sub), readFileSync(pathOf(sub)).toString().replace("b.txt", "c.txt"));
    const other = createVersionStore({ dataDir });
    await expect(other.read(version.id, "sub/c.txt")).rejects.toThrow(SnapshotCorruptError);
    await other.removeObjects([pack]);
    await expect(other.list(version.id)).rejects.toThrow(SnapshotCorruptError);
    expect(existsSync(pathOf(pack))).toBe(false);
    await expect(other.removeObjects(["../metadata.json"])).rejects.toThrow(/Invalid object key/);
  });

  it("refuses a workspace over maxBytes and bad ids, and writes nothing for them", async () => {
    const ws = fresh("ws");
    writeFileSync(join(ws, "a.bin"), randomBytes(5000));
    const store = createVersionStore({ dataDir });
    const written: string[] = [];
    await expect(store.save(trustedFolderIo(ws), { maxBytes: 1000, onWrite: async (keys) => void written.push(...keys) })).rejects.toThrow(SnapshotTooLargeError);
    const base = await store.save(trustedFolderIo(ws));
    writeFileSync(join(ws, "b.bin"), randomBytes(5000));
    await expect(store.save(trustedFolderIo(ws), { base: base.id, maxBytes: 8000 })).rejects.toThrow(SnapshotTooLargeError);
    expect(written).toEqual([]);
    await expect(store.save(trustedFolderIo(ws), { base: "../../etc" })).rejects.toThrow(/Invalid workspace version id/);
    await expect(store.restore("nope", trustedFolderIo(fresh("r")))).rejects.toThrow(/Invalid workspace version id/);
    await expect(store.save(trustedFolderIo(join(root, "no-such-dir")))).rejects.toThrow(/no-such-dir does not exist/);
    expect(() => createVersionStore({ dataDir: "relative" })).toThrow(/absolute/);
  });

  it("keeps every earlier version whole when a saving process is killed at any point", async () => {
    const ws = fresh("ws");
    for (let d = 0; d < 4; d++) {
      mkdirSync(join(ws, `d${d}`));
      for (let f = 0; f < 200; f++) writeFileSync(join(ws, `d${d}`, `f${f}`), randomBytes(4000));
    }
    writeFileSync(join(ws, "big.bin"), randomBytes(20_000_000));
    const store = createVersionStore({ dataDir });
    const versions: Array<{ id: string; content: string }> = [];
    let base = (await store.save(trustedFolderIo(ws))).id;
    versions.push({ id: base, content: contentOf(ws) });
    const child = resolve(import.meta.dirname, "../helpers/save-version.ts");
    for (let round = 0; round < 6; round++) {
      for (let f = 0; f < 30; f++) writeFileSync(join(ws, `d${f % 4}`, `f${(f * 7 + round) % 200}`), randomBytes(4000));
      writeFileSync(join(ws, "big.bin"), randomBytes(20_000_000));
      const proc = spawn(process.execPath, ["--import", "tsx", child, dataDir, ws, base], { stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      proc.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
      const exited = new Promise<number | null>((done) => proc.once("close", done));
      // Kill it somewhere between its start and (usually) before it ends.
      setTimeout(() => proc.kill("SIGKILL"), 50 + round * 120);
      const code = await exited;
      if (code === 0 && out.trim()) {
        base = JSON.parse(out).id as string;
        versions.push({ id: base, content: contentOf(ws) });
      }
      for (const version of versions) expect(contentOf(await restoreInto(store, version.id))).toBe(version.content);
    }
    // A save after the crashes still works and reuses what exists.
    const last = await store.save(trustedFolderIo(ws), { base });
    expect(contentOf(await restoreInto(store, last.id))).toBe(contentOf(ws));
  }, 120_000);

  it("leaves out a name with a NUL in it that a hostile tar stream carries, so the version reads the same from a cold store", async () => {
    // What a sandbox process that took over its tar could send: pax records can carry any byte.
    const body = Buffer.from("kept\n");
    const archive = Buffer.concat([
      tarHeader({ type: "file", path: "bad\0name", size: body.length, mode: 0o644, mtime: "1700000000.000000000" }),
      body,
      tarPadding(body.length),
      tarHeader({ type: "file", path: "good.txt", size: body.length, mode: 0o644, mtime: "1700000000.000000000" }),
      body,
      tarPadding(body.length),
      TAR_END,
    ]);
    const hostile = {
      root: fresh("hostile"),
      run: () => ioProcessOf({ stdout: Readable.from([archive]), stderr: Readable.from([]), stdin: null }, Promise.resolve({ code: 0 }), () => {}),
    };
    const store = createVersionStore({ dataDir });
    const version = await store.save(hostile);
    expect((await store.list(version.id)).map((entry) => entry.path)).toEqual(["good.txt"]);
    await store.dispose();
    // A store that never saw the save reads the version from its objects alone.
    const cold = createVersionStore({ dataDir });
    expect((await cold.list(version.id)).map((entry) => entry.path)).toEqual(["good.txt"]);
    expect((await cold.read(version.id, "good.txt"))?.toString()).toBe("kept\n");
    await cold.dispose();
  });

  it("rejects a save whose tar or find process dies mid-stream, and the server process lives on", async () => {
    const ws = fresh("ws");
    // More than a pipe holds at every step: the listing (4,000 long names), the whole tar, the changed files.
    for (let d = 0; d < 8; d++) {
      mkdirSync(join(ws, `d${d}`));
      for (let f = 0; f < 500; f++) writeFileSync(join(ws, `d${d}`, `file-with-a-long-name-${"x".repeat(40)}-${f}`), randomBytes(2000));
    }
    const store = createVersionStore({ dataDir });
    const base = await store.save(trustedFolderIo(ws));
    for (let d = 0; d < 8; d++) writeFileSync(join(ws, `d${d}`, "big"), randomBytes(2_000_000));
    const uncaught: unknown[] = [];
    const record = (error: unknown) => void uncaught.push(error);
    process.on("uncaughtException", record);
    process.on("unhandledRejection", record);
    try {
      // Each io process is killed as soon as its first bytes arrive (the first one, or only the named command).
      const killing = (command?: string) => {
        const inner = trustedFolderIo(ws);
        return {
          root: inner.root,
          run(name: string, args: string[], options?: { stdin?: boolean }) {
            const proc = inner.run(name, args, options);
            if (!command || command === name) proc.stdout.once("data", () => proc.kill());
            return proc;
          },
        };
      };
      await expect(store.save(killing())).rejects.toThrow(/Reading the workspace failed/);
      await expect(store.save(killing("find"), { base: base.id })).rejects.toThrow(/Listing the workspace failed/);
      await expect(store.save(killing("tar"), { base: base.id })).rejects.toThrow(/Reading the workspace failed/);
      // Killed before it wrote anything at all.
      const silent = {
        root: ws,
        run(name: string, args: string[], options?: { stdin?: boolean }) {
          const proc = trustedFolderIo(ws).run(name, args, options);
          proc.kill();
          return proc;
        },
      };
      await expect(store.save(silent)).rejects.toThrow();
      // Give late stream events a turn.
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(uncaught).toEqual([]);
      // The store still saves and the base is whole.
      const next = await store.save(trustedFolderIo(ws), { base: base.id });
      expect(contentOf(await restoreInto(store, next.id))).toBe(contentOf(ws));
      // A verify whose listing breaks off is an error, never "the same".
      await expect(store.verify(next.id, killing("find"))).rejects.toThrow(/Listing the workspace failed/);
      expect(await store.verify(next.id, trustedFolderIo(ws))).toBe(true);
      expect(uncaught).toEqual([]);
    } finally {
      process.off("uncaughtException", record);
      process.off("unhandledRejection", record);
    }
  });

  it("still reads the per-session snapshots of format 2 through `legacy`", async () => {
    const ws = hostileWorkspace();
    const old = createSnapshotStore({ dataDir });
    await old.snapshotWorkspace("old-1", trustedFolderIo(ws), { agentName: "legacy-agent" });
    await old.dispose();
    const store = createVersionStore({ dataDir });
    expect(await store.legacy.info("old-1")).toMatchObject({ agentName: "legacy-agent", fileCount: 12 });
    expect((await store.legacy.read("old-1", "run.sh"))?.toString()).toBe("#!/bin/sh\necho run\n");
    expect((await store.legacy.list("old-1"))?.find((e) => e.path === "run.sh")).toMatchObject({ size: 19 });
    const target = fresh("restored");
    expect(await store.legacy.restore("old-1", trustedFolderIo(target))).toBe(true);
    expect(readFileSync(join(target, "src", "deep", "er", "data.bin"))).toEqual(Buffer.from([0, 255, 0, 13, 10, 0]));
    expect(await store.legacy.archive("old-1")).not.toBeNull();
    expect(await store.legacy.delete("old-1")).toBe(true);
    expect(await store.legacy.info("old-1")).toBeNull();
    expect(await store.legacy.restore("old-1", trustedFolderIo(fresh("r")))).toBe(false);
  });
});

describe("workspace versions (S3-compatible bucket)", () => {
  it("round-trips through a real S3 protocol server and shares objects under one prefix", async () => {
    const bucketDir = join(root, "s3-data");
    mkdirSync(bucketDir);
    const server = new S3rver({ port: 0, address: "127.0.0.1", directory: bucketDir, silent: true, configureBuckets: [{ name: "ash" }] });
    const { port } = await server.run();
    try {
      const s3 = { endpoint: `http://127.0.0.1:${port}`, bucket: "ash", region: "us-east-1", accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
      const store = createVersionStore({ s3 });
      const ws = hostileWorkspace();
      const first = await store.save(trustedFolderIo(ws));
      const objects = (readdirSync(join(bucketDir, "ash"), { recursive: true }) as string[]).filter((p) => p.endsWith("._S3rver_object")).map((p) => p.replace(/\._S3rver_object$/, ""));
      expect(objects.sort()).toEqual(first.objects.map((key) => `store/${key}`).sort());
      const target = await restoreInto(store, first.id);
      expect(contentOf(target)).toBe(contentOf(ws));
      expect(describeTree(target).filter((line) => !line.includes(" link-absolute-inside -> "))).toEqual(expectedOf(ws));

      writeFileSync(join(ws, "run.sh"), "#!/bin/sh\necho v2\n");
      const second = await store.save(trustedFolderIo(ws), { base: first.id });
      // Hard-linked files are read again (their second names come as links), but only run.sh has other bytes.
      expect(second.changedFiles).toBe(1);
      // A second store (another server) on the same bucket reads it.
      const other = createVersionStore({ s3 });
      expect((await other.read(second.id, "src/hard-run.sh"))?.toString()).toBe("#!/bin/sh\necho v2\n");
      expect(await other.verify(second.id, trustedFolderIo(ws))).toBe(false); // the fifo and the outside links are not in it
      await other.removeObjects(second.objects);
      // Objects the two versions share are gone, so the first one is damaged now (seen by a store with nothing cached).
      const third = createVersionStore({ s3 });
      await expect(third.objectsOf(first.id)).rejects.toThrow(SnapshotCorruptError);
      for (const each of [store, other, third]) await each.dispose();
    } finally {
      await server.close();
    }
  });
});
