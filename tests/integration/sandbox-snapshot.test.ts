import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Driver } from "unstorage";
import fsDriver from "unstorage/drivers/fs";
import memoryDriver from "unstorage/drivers/memory";
import s3Driver from "unstorage/drivers/s3";
// @ts-expect-error s3rver ships no type declarations
import S3rver from "s3rver";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { createSnapshotStore, SnapshotCorruptError } from "../../src/snapshots";
import { trustedFolderIo } from "../../src/sandbox/workspace-io";

const root = mkdtempSync(join(tmpdir(), "ash-snap-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let counter = 0;
let dataDir: string;
beforeEach(() => {
  dataDir = join(root, `data-${++counter}`);
  mkdirSync(dataDir);
});

/** A workspace with binary data, modes, nesting, an empty dir, links and awkward names. */
function makeWorkspace(): string {
  const ws = join(root, `ws-${++counter}`);
  mkdirSync(join(ws, "src", "deep", "er"), { recursive: true });
  mkdirSync(join(ws, "empty-dir"));
  writeFileSync(join(ws, "blob.bin"), randomBytes(300_000));
  writeFileSync(join(ws, "src", "deep", "er", "data.bin"), Buffer.from([0, 255, 0, 13, 10, 0]));
  writeFileSync(join(ws, "run.sh"), "#!/bin/sh\necho run\n");
  chmodSync(join(ws, "run.sh"), 0o755);
  writeFileSync(join(ws, "private.key"), "secret");
  chmodSync(join(ws, "private.key"), 0o600);
  writeFileSync(join(ws, "empty.txt"), "");
  writeFileSync(join(ws, "we:ird?name.."), "odd");
  mkdirSync(join(ws, "node_modules", "pkg"), { recursive: true });
  writeFileSync(join(ws, "node_modules", "pkg", "index.js"), "module.exports = 1;");
  symlinkSync("src/deep/er/data.bin", join(ws, "link-inside"));
  symlinkSync("/etc/hostname", join(ws, "link-outside"));
  symlinkSync("../../../../etc", join(ws, "src", "escape"));
  return ws;
}

/** Restores into a new folder (the store only extracts into an empty workspace). */
async function restoreInto(store: ReturnType<typeof createSnapshotStore>, id: string, target: string): Promise<boolean> {
  mkdirSync(target, { recursive: true });
  return store.restoreWorkspace(id, trustedFolderIo(target));
}

/** path -> [sha256, mode] of regular files, and link -> target, for comparing trees. */
function describeTree(dir: string, rel = ""): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(join(dir, rel)).sort()) {
    const path = rel ? `${rel}/${name}` : name;
    const info = lstatSync(join(dir, path));
    if (info.isDirectory()) {
      out[`${path}/`] = (info.mode & 0o777).toString(8);
      Object.assign(out, describeTree(dir, path));
    } else if (info.isSymbolicLink()) out[path] = `-> ${readlinkSync(join(dir, path))}`;
    else out[path] = `${createHash("sha256").update(readFileSync(join(dir, path))).digest("hex")} ${(info.mode & 0o777).toString(8)}`;
  }
  return out;
}

/** A real fs driver that fails the way a crash would, when `failOn` says so. */
function failingFsDriver(base: string, failOn: (key: string, value: unknown) => boolean): Driver {
  const inner = fsDriver({ base, ignore: [] });
  return {
    ...inner,
    name: "fs-with-failure",
    async setItemRaw(key, value, opts) {
      if (failOn(key, value)) throw new Error(`simulated crash while writing ${key}`);
      return inner.setItemRaw!(key, value, opts);
    },
  };
}

describe("workspace snapshots (fs driver)", () => {
  it("round-trips bytes, modes, empty dirs and inside symlinks; skips links leading outside", async () => {
    const ws = makeWorkspace();
    const store = createSnapshotStore({ dataDir });
    const info = await store.snapshotWorkspace("sess-1", trustedFolderIo(ws), { agentName: "helper-agent", turn: 3 });
    expect(info).toMatchObject({ sessionId: "sess-1", agentName: "helper-agent", fileCount: 7, extra: { turn: 3 } });
    expect(info.skipped.sort()).toEqual(["link-outside", "src/escape"]);
    expect(new Date(info.persistedAt).getTime()).not.toBeNaN();

    const target = join(root, "restored-1");
    expect(await restoreInto(store, "sess-1", target)).toBe(true);
    const expected = describeTree(ws);
    delete expected["link-outside"];
    delete expected["src/escape"];
    expect(describeTree(target)).toEqual(expected);
    expect(statSync(join(target, "run.sh")).mode & 0o777).toBe(0o755);
    expect(statSync(join(target, "blob.bin")).mtimeMs).toBeCloseTo(statSync(join(ws, "blob.bin")).mtimeMs, -1);
  });

  it("lays files out as sessions/<id>/blobs/<sha256> plus metadata.json (format 2)", async () => {
    const ws = makeWorkspace();
    const store = createSnapshotStore({ dataDir });
    await store.snapshotWorkspace("sess-2", trustedFolderIo(ws), { agentName: "layout-agent" });
    const sessionDir = join(dataDir, "sessions", "sess-2");
    const runSha = createHash("sha256").update("#!/bin/sh\necho run\n").digest("hex");
    expect(readFileSync(join(sessionDir, "blobs", runSha), "utf8")).toBe("#!/bin/sh\necho run\n");
    const metadata = JSON.parse(readFileSync(join(sessionDir, "metadata.json"), "utf8"));
    expect(metadata).toMatchObject({ format: 2, agentName: "layout-agent", fileCount: 7, sessionId: "sess-2" });
    expect(metadata.bytes).toBe(300_000 + 6 + 19 + 6 + 0 + 3 + 19);
    expect(metadata.entries.find((f: { path: string }) => f.path === "run.sh")).toMatchObject({ mode: 0o755, chunks: [runSha] });
    expect(existsSync(join(sessionDir, "staging"))).toBe(false);
    expect(existsSync(join(sessionDir, "staging.json"))).toBe(false);
  });

  it("reads and lists a paused session's files without restoring them", async () => {
    const ws = makeWorkspace();
    const store = createSnapshotStore({ dataDir });
    await store.snapshotWorkspace("sess-3", trustedFolderIo(ws), { agentName: "a" });
    expect(await store.readSnapshotFile("sess-3", "src/deep/er/data.bin")).toEqual(Buffer.from([0, 255, 0, 13, 10, 0]));
    expect((await store.readSnapshotFile("sess-3", "we:ird?name.."))?.toString()).toBe("odd");
    expect(await store.readSnapshotFile("sess-3", "missing.txt")).toBeNull();
    expect(await store.readSnapshotFile("no-such-session", "run.sh")).toBeNull();
    const list = await store.listSnapshotFiles("sess-3");
    expect(list?.find((e) => e.path === "run.sh")).toMatchObject({ type: "file", size: 19, mode: 0o755 });
    expect(list?.find((e) => e.path === "empty-dir")).toMatchObject({ type: "dir" });
    expect(list?.find((e) => e.path === "link-inside")).toMatchObject({ type: "symlink", target: "src/deep/er/data.bin" });
    expect(list?.some((e) => e.path === "link-outside")).toBe(false);
    expect(await store.listSnapshotFiles("no-such-session")).toBeNull();
    await expect(store.readSnapshotFile("sess-3", "../sess-2/metadata.json")).rejects.toThrow(/Invalid snapshot path/);
  });

  it("replaces a snapshot: changed and new files updated, deleted ones gone, unchanged ones not rewritten", async () => {
    const ws = makeWorkspace();
    const store = createSnapshotStore({ dataDir });
    await store.snapshotWorkspace("sess-4", trustedFolderIo(ws), { agentName: "a" });
    const blobSha = createHash("sha256").update(readFileSync(join(ws, "blob.bin"))).digest("hex");
    const storedBlob = join(dataDir, "sessions", "sess-4", "blobs", blobSha);
    const inodeBefore = statSync(storedBlob).ino;

    writeFileSync(join(ws, "run.sh"), "#!/bin/sh\necho changed\n");
    rmSync(join(ws, "src"), { recursive: true });
    writeFileSync(join(ws, "new.txt"), "new");
    const info = await store.snapshotWorkspace("sess-4", trustedFolderIo(ws), { agentName: "a" });
    expect(info.fileCount).toBe(7 - 1 + 1);

    expect(statSync(storedBlob).ino).toBe(inodeBefore);
    // The deleted folder's only file is no longer stored.
    expect(existsSync(join(dataDir, "sessions", "sess-4", "blobs", createHash("sha256").update(Buffer.from([0, 255, 0, 13, 10, 0])).digest("hex")))).toBe(false);
    const target = join(root, "restored-4");
    await restoreInto(store, "sess-4", target);
    const expected = describeTree(ws);
    delete expected["link-outside"];
    delete expected["link-inside"]; // its target folder is gone, so it now points nowhere
    const restored = describeTree(target);
    delete restored["link-inside"];
    expect(restored).toEqual(expected);
  });

  it("keeps the previous snapshot intact when a snapshot crashes while writing files", async () => {
    const ws = makeWorkspace();
    const base = join(dataDir, "sessions");
    let crash = false;
    let writes = 0;
    const store = createSnapshotStore({
      // From the third new blob on, every write fails: the process is as good as dead.
      driver: failingFsDriver(base, (key) => crash && key.includes(":blobs:") && ++writes >= 3),
    });
    await store.snapshotWorkspace("sess-5", trustedFolderIo(ws), { agentName: "a" });
    const before = describeTree(ws);

    for (const name of ["blob.bin", "run.sh", "private.key", "empty.txt", "new-1", "new-2"]) writeFileSync(join(ws, name), `v2 ${name}`);
    crash = true;
    await expect(store.snapshotWorkspace("sess-5", trustedFolderIo(ws), { agentName: "a" })).rejects.toThrow(/simulated crash/);

    const target = join(root, "restored-5");
    expect(await restoreInto(store, "sess-5", target)).toBe(true);
    const restored = describeTree(target);
    delete before["link-outside"];
    delete before["src/escape"];
    expect(restored).toEqual(before);
    expect((await store.readSnapshotFile("sess-5", "run.sh"))?.toString()).toBe("#!/bin/sh\necho run\n");

    // The next snapshot succeeds and clears the abandoned blobs and intent.
    crash = false;
    await store.snapshotWorkspace("sess-5", trustedFolderIo(ws), { agentName: "a" });
    expect((await store.readSnapshotFile("sess-5", "run.sh"))?.toString()).toBe("v2 run.sh");
    const staging = join(base, "sess-5", "staging");
    expect(existsSync(staging) ? readdirSync(staging, { recursive: true }).filter((p) => statSync(join(staging, String(p))).isFile()) : []).toEqual([]);
    const metadata = JSON.parse(readFileSync(join(base, "sess-5", "metadata.json"), "utf8"));
    const needed = new Set(metadata.entries.flatMap((e: { chunks?: string[] }) => e.chunks ?? []));
    expect(readdirSync(join(base, "sess-5", "blobs")).filter((name) => !needed.has(name))).toEqual([]);
  });

  it("keeps the new snapshot when a crash hits after the commit, and clears the old blobs on the next save", async () => {
    const ws = makeWorkspace();
    const base = join(dataDir, "sessions");
    let crash = false;
    const inner = fsDriver({ base, ignore: [] });
    const store = createSnapshotStore({
      driver: { ...inner, name: "fs-crash-on-remove", async removeItem(key, opts) {
        if (crash && key.includes(":blobs:")) throw new Error(`simulated crash while removing ${key}`);
        return inner.removeItem!(key, opts);
      } },
    });
    await store.snapshotWorkspace("sess-6", trustedFolderIo(ws), { agentName: "a" });
    const oldSha = createHash("sha256").update("#!/bin/sh\necho run\n").digest("hex");
    writeFileSync(join(ws, "run.sh"), "#!/bin/sh\necho v2\n");
    crash = true;
    await expect(store.snapshotWorkspace("sess-6", trustedFolderIo(ws), { agentName: "a" })).rejects.toThrow(/simulated crash/);

    expect((await store.readSnapshotFile("sess-6", "run.sh"))?.toString()).toBe("#!/bin/sh\necho v2\n");
    const target = join(root, "restored-6");
    await restoreInto(store, "sess-6", target);
    expect(readFileSync(join(target, "run.sh"), "utf8")).toBe("#!/bin/sh\necho v2\n");

    crash = false;
    await store.snapshotWorkspace("sess-6", trustedFolderIo(ws), { agentName: "a" });
    expect(existsSync(join(base, "sess-6", "blobs", oldSha))).toBe(false);
    expect(existsSync(join(base, "sess-6", "staging.json"))).toBe(false);
  });

  it("survives a metadata.json torn mid-write", async () => {
    const ws = makeWorkspace();
    const store = createSnapshotStore({ dataDir });
    await store.snapshotWorkspace("sess-7", trustedFolderIo(ws), { agentName: "torn" });
    const pointer = join(dataDir, "sessions", "sess-7", "metadata.json");
    truncateSync(pointer, Math.floor(statSync(pointer).size / 2));
    expect(await store.readSnapshotInfo("sess-7")).toMatchObject({ agentName: "torn", fileCount: 7 });
    const target = join(root, "restored-7");
    expect(await restoreInto(store, "sess-7", target)).toBe(true);
    expect(readFileSync(join(target, "run.sh"), "utf8")).toBe("#!/bin/sh\necho run\n");
  });

  it("refuses to hand out bytes that do not match the record", async () => {
    const ws = makeWorkspace();
    const store = createSnapshotStore({ dataDir });
    await store.snapshotWorkspace("sess-8", trustedFolderIo(ws), { agentName: "a" });
    writeFileSync(join(dataDir, "sessions", "sess-8", "blobs", createHash("sha256").update("#!/bin/sh\necho run\n").digest("hex")), "tampered");
    await expect(store.readSnapshotFile("sess-8", "run.sh")).rejects.toThrow(SnapshotCorruptError);
  });

  it("deletes a snapshot completely; a missing one reads as absent", async () => {
    const ws = makeWorkspace();
    const store = createSnapshotStore({ dataDir });
    await store.snapshotWorkspace("sess-9", trustedFolderIo(ws), { agentName: "a" });
    expect(await store.deleteSnapshot("sess-9")).toBe(true);
    expect(existsSync(join(dataDir, "sessions", "sess-9"))).toBe(false);
    expect(await store.deleteSnapshot("sess-9")).toBe(false);
    expect(await store.readSnapshotInfo("sess-9")).toBeNull();
    expect(await restoreInto(store, "sess-9", join(root, "never"))).toBe(false);
  });

  it("still reads and restores a format-1 snapshot, and replaces it with format 2 on the next save", async () => {
    const base = join(dataDir, "sessions", "old-1");
    mkdirSync(join(base, "workspace", "sub"), { recursive: true });
    writeFileSync(join(base, "workspace", "sub", "a.txt"), "alpha");
    writeFileSync(join(base, "workspace", "we%3Aird"), "odd");
    const sha = (text: string) => createHash("sha256").update(text).digest("hex");
    writeFileSync(join(base, "metadata.json"), JSON.stringify({
      format: 1, sessionId: "old-1", agentName: "legacy", persistedAt: new Date().toISOString(), generation: "g1", fileCount: 2, bytes: 8,
      files: [
        { path: "sub/a.txt", size: 5, mode: 0o640, mtimeMs: 1_700_000_000_000, sha256: sha("alpha"), loc: "workspace" },
        { path: "we:ird", size: 3, mode: 0o644, mtimeMs: 1_700_000_000_000, sha256: sha("odd"), loc: "workspace" },
      ],
      dirs: [{ path: "sub", mode: 0o755 }], symlinks: [{ path: "link", target: "sub/a.txt" }], skipped: [], extra: {},
    }));
    const store = createSnapshotStore({ dataDir });
    expect((await store.readSnapshotFile("old-1", "we:ird"))?.toString()).toBe("odd");
    const target = join(root, "restored-old");
    expect(await restoreInto(store, "old-1", target)).toBe(true);
    expect(readFileSync(join(target, "sub", "a.txt"), "utf8")).toBe("alpha");
    expect(statSync(join(target, "sub", "a.txt")).mode & 0o777).toBe(0o640);
    expect(readlinkSync(join(target, "link"))).toBe("sub/a.txt");

    await store.snapshotWorkspace("old-1", trustedFolderIo(target), { agentName: "legacy" });
    expect(JSON.parse(readFileSync(join(base, "metadata.json"), "utf8")).format).toBe(2);
    expect(existsSync(join(base, "workspace"))).toBe(false);
    expect((await store.readSnapshotFile("old-1", "sub/a.txt"))?.toString()).toBe("alpha");
  });

  it("rejects bad input with a clear error and writes nothing", async () => {
    const ws = makeWorkspace();
    const store = createSnapshotStore({ dataDir });
    await expect(store.snapshotWorkspace("../evil", trustedFolderIo(ws), { agentName: "a" })).rejects.toThrow(/Invalid session id/);
    await expect(store.snapshotWorkspace("ok", trustedFolderIo(ws), { agentName: "" })).rejects.toThrow(/agentName/);
    await expect(store.snapshotWorkspace("ok", trustedFolderIo(join(root, "no-such-dir")), { agentName: "a" })).rejects.toThrow(/Listing the workspace failed/);
    expect(existsSync(join(dataDir, "sessions", "ok", "metadata.json"))).toBe(false);
    await expect(store.snapshotWorkspace("ok", trustedFolderIo(ws), { agentName: "a" }, { maxBytes: 1000 })).rejects.toThrow(/more than the sandbox's disk limit/);
    expect(await store.readSnapshotInfo("ok")).toBeNull();
    expect(() => createSnapshotStore({ dataDir: "relative" })).toThrow(/absolute/);
  });
});

describe("workspace snapshots (another unstorage driver)", () => {
  it("round-trips, recovers from a crash and deletes through the generic driver API", async () => {
    const ws = makeWorkspace();
    let crash = false;
    const inner = memoryDriver();
    const driver: Driver = {
      ...inner,
      async setItemRaw(key, value, opts) {
        if (crash && key.includes(":blobs:")) throw new Error("simulated crash");
        return inner.setItemRaw!(key, value, opts);
      },
    };
    const store = createSnapshotStore({ driver });
    await store.snapshotWorkspace("mem-1", trustedFolderIo(ws), { agentName: "m" });
    const target = join(root, "restored-mem");
    expect(await restoreInto(store, "mem-1", target)).toBe(true);
    expect(readFileSync(join(target, "blob.bin")).equals(readFileSync(join(ws, "blob.bin")))).toBe(true);

    writeFileSync(join(ws, "blob.bin"), "replaced");
    crash = true;
    await expect(store.snapshotWorkspace("mem-1", trustedFolderIo(ws), { agentName: "m" })).rejects.toThrow(/simulated crash/);
    expect((await store.readSnapshotFile("mem-1", "blob.bin"))?.length).toBe(300_000);
    crash = false;
    await store.snapshotWorkspace("mem-1", trustedFolderIo(ws), { agentName: "m" });
    expect((await store.readSnapshotFile("mem-1", "blob.bin"))?.toString()).toBe("replaced");

    expect(await store.deleteSnapshot("mem-1")).toBe(true);
    expect(await inner.getKeys!("", {})).toEqual([]);
  });
});

describe("workspace snapshots (S3-compatible bucket)", () => {
  it("round-trips through a real S3 protocol server, survives a crash before the commit, and deletes every object", async () => {
    const bucketDir = join(root, "s3-data");
    mkdirSync(bucketDir);
    const server = new S3rver({ port: 0, address: "127.0.0.1", directory: bucketDir, silent: true, configureBuckets: [{ name: "ash" }] });
    const { port } = await server.run();
    try {
      const s3 = { endpoint: `http://127.0.0.1:${port}`, bucket: "ash", region: "us-east-1", accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
      const store = createSnapshotStore({ s3 });
      const ws = makeWorkspace();
      const info = await store.snapshotWorkspace("s3-sess", trustedFolderIo(ws), { agentName: "bucket-agent" });
      expect(info.fileCount).toBe(7);
      // The bucket mirrors the fs layout under the prefix.
      const objects = listFiles(join(bucketDir, "ash"));
      expect(objects).toContain("sessions/s3-sess/metadata.json");
      expect(objects).toContain(`sessions/s3-sess/blobs/${createHash("sha256").update(Buffer.from([0, 255, 0, 13, 10, 0])).digest("hex")}`);

      const target = join(root, "restored-s3");
      expect(await restoreInto(store, "s3-sess", target)).toBe(true);
      const expected = describeTree(ws);
      delete expected["link-outside"];
      delete expected["src/escape"];
      expect(describeTree(target)).toEqual(expected);

      // A crash half way through the next snapshot: the stored one stays whole.
      writeFileSync(join(ws, "run.sh"), "#!/bin/sh\necho v2\n");
      writeFileSync(join(ws, "blob.bin"), "v2");
      let puts = 0;
      const crashing = createSnapshotStore({
        driver: prefixedDriver(s3Driver(s3), "sessions", (key) => key.includes(":blobs:") && ++puts >= 2),
      });
      await expect(crashing.snapshotWorkspace("s3-sess", trustedFolderIo(ws), { agentName: "x" })).rejects.toThrow(/simulated crash/);
      expect((await store.readSnapshotFile("s3-sess", "run.sh"))?.toString()).toBe("#!/bin/sh\necho run\n");

      await store.snapshotWorkspace("s3-sess", trustedFolderIo(ws), { agentName: "bucket-agent" });
      expect((await store.readSnapshotFile("s3-sess", "run.sh"))?.toString()).toBe("#!/bin/sh\necho v2\n");
      expect(await store.deleteSnapshot("s3-sess")).toBe(true);
      expect(listFiles(join(bucketDir, "ash")).filter((p) => p.startsWith("sessions/s3-sess/"))).toEqual([]);
      expect(() => createSnapshotStore({ s3: { ...s3, bucket: "" } })).toThrow(/needs bucket/);
    } finally {
      await server.close();
    }
  });
});

/** A driver that stores under `prefix:` and fails every write once `failOn` said so. */
function prefixedDriver(inner: Driver, prefix: string, failOn: (key: string) => boolean): Driver {
  let crashed = false;
  const at = (key: string) => `${prefix}:${key}`;
  return {
    name: "prefixed-with-failure",
    hasItem: (key, opts) => inner.hasItem(at(key), opts),
    getItem: (key, opts) => inner.getItem(at(key), opts),
    getItemRaw: (key, opts) => inner.getItemRaw!(at(key), opts),
    async setItemRaw(key, value, opts) {
      crashed ||= failOn(key);
      if (crashed) throw new Error(`simulated crash while writing ${key}`);
      return inner.setItemRaw!(at(key), value, opts);
    },
    removeItem: (key, opts) => inner.removeItem!(at(key), opts),
    getKeys: () => [],
  };
}

/** Object keys s3rver keeps on disk (it stores each object as `<key>._S3rver_object`). */
function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true }) as string[])
    .filter((p) => p.endsWith("._S3rver_object"))
    .map((p) => p.replace(/\._S3rver_object$/, ""))
    .sort();
}
