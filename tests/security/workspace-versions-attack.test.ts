import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cgroup1Mounts } from "../../src/sandbox/cgroup1";
import { createSandbox, describeSandboxHost, sweepResourceGroups, type Sandbox } from "../../src/sandbox";
import { createVersionStore, type VersionStore } from "../../src/snapshots";
import { sandboxProblem, skipUnlessReady } from "../helpers/requirements";
import { filesUnder, SWAPPER } from "./race-helper";

// The version store's save and restore, attacked from inside a real
// bubblewrap sandbox (what tests/security/workspace-race.test.ts and
// workspace-crash.test.ts do through the server): a loop swapping files and
// symlinks to secrets while saves run, and workspaces of odd entries. The
// store reads and writes only through the sandbox's own io processes.
const host = await describeSandboxHost({ allowUnisolated: true });
const skip = skipUnlessReady("workspace version attacks", sandboxProblem(host));
const cgroupParent = `ash-test-versions-${process.pid}`;
const SWAP_SECONDS = 60;
const SWAP_ROUNDS = 2_000_000;
const TEST_TIMEOUT = 300_000;

describe.skipIf(skip)("a sandbox attacking the version store's save and restore", () => {
  let dataDir: string;
  let store: VersionStore;
  const sandboxes: Sandbox[] = [];
  const canary = `CANARY-${randomBytes(12).toString("hex")}`;
  let canaryPath: string;

  beforeAll(async () => {
    process.env.ASH_TEST_SECRET = canary;
    dataDir = mkdtempSync(join(tmpdir(), "ash-versions-attack-"));
    chmodSync(dataDir, 0o711);
    canaryPath = join(dataDir, "canary.txt");
    writeFileSync(canaryPath, `${canary}\n`, { mode: 0o600 });
    store = createVersionStore({ dataDir });
  });
  afterAll(async () => {
    for (const sandbox of sandboxes) await sandbox.destroy();
    await store?.dispose();
    await sweepResourceGroups("cgroup1", [], { cgroup1Parent: cgroupParent });
    for (const mount of Object.values(cgroup1Mounts())) if (existsSync(join(mount!, cgroupParent))) rmdirSync(join(mount!, cgroupParent));
    rmSync(dataDir, { recursive: true, force: true });
    delete process.env.ASH_TEST_SECRET;
  });

  const newSandbox = async () => {
    const sandbox = await createSandbox({ dataDir, cgroup1Parent: cgroupParent });
    sandboxes.push(sandbox);
    return sandbox;
  };
  const leaks = (data: Buffer) => data.includes(canary);
  function expectCleanStore(): void {
    for (const { path, data } of filesUnder(join(dataDir, "store"))) if (leaks(data)) throw new Error(`secret bytes in ${path}`);
  }

  it(
    "saves while files and symlinks to secrets swap places never store the secrets, and each version restores",
    async () => {
      const sandbox = await newSandbox();
      const setup = await sandbox.exec(`cat > swap.py <<'PY'\n${SWAPPER}\nPY\npython3 swap.py setup '${canaryPath}'`, { timeoutMs: 120_000 });
      expect(setup.stdout, setup.stderr).toContain("ready");
      let settled = false;
      const swapper = sandbox.exec(`python3 swap.py swap ${SWAP_SECONDS} ${SWAP_ROUNDS}`, { timeoutMs: (SWAP_SECONDS + 30) * 1000 }).finally(() => (settled = true));
      let started = false;
      for (let i = 0; i < 600 && !started && !settled; i++) started = (await sandbox.exec("test -e race/swapping && echo yes")).stdout.includes("yes");
      expect(started).toBe(true);
      const versions: string[] = [];
      try {
        let base: string | null = null;
        for (let round = 0; round < 4; round++) {
          const version = await store.save(sandbox.io, { base });
          versions.push(version.id);
          base = version.id;
          expectCleanStore();
          expect(leaks(Buffer.from(JSON.stringify(await store.list(version.id))))).toBe(false);
          for (let i = 0; i < 20; i += 5) {
            const data = await store.read(version.id, `race/f${String(i).padStart(2, "0")}`);
            if (data) expect(leaks(data)).toBe(false);
          }
        }
      } finally {
        await sandbox.exec("touch race/stop");
        await swapper;
      }
      for (const id of versions) {
        const target = await newSandbox();
        await store.restore(id, target.io);
        const seen = await target.exec("cat race/f* race/l* 2>/dev/null; ls race | wc -l");
        expect(leaks(Buffer.from(seen.stdout))).toBe(false);
        expect(Number(seen.stdout.trim().split("\n").at(-1))).toBeGreaterThan(4000);
        await target.destroy();
      }
    },
    TEST_TIMEOUT,
  );

  const attacks: Array<[string, string]> = [
    ["a name of 200 colons and a 255-byte folder", `touch "$(printf ':%.0s' $(seq 1 200))" && mkdir "$(printf 'b%.0s' $(seq 1 255))" && echo x > "$(printf 'b%.0s' $(seq 1 255))/$(printf ':%.0s' $(seq 1 200))"`],
    ["names that are not UTF-8", `touch "$(printf 'bad-\\377\\376')" "$(printf 'x\\300y')" && mkdir "$(printf 'dir-\\377')" && echo z > "$(printf 'dir-\\377/f\\376')"`],
    ["fifos and a socket", `mkfifo pipe && mkdir sub && mkfifo sub/pipe2 && python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.bind('sock')"`],
    ["a device node, a symlink loop and links to secrets", `(mknod null c 1 3 || true) && ln -s loop1 loop2 && ln -s loop2 loop1 && ln -s /etc/shadow shadow && ln -s '${"CANARY_PATH"}' canary`],
    ["a mode-000 file and folder", "echo secret > locked && chmod 000 locked && mkdir lockdir && echo y > lockdir/f && chmod 000 lockdir"],
    ["a deep tree", `python3 -c "
import os
p = 'deep'
for i in range(600):
    p = os.path.join(p, 'd')
os.makedirs(p)
open(os.path.join(p, 'bottom'), 'w').write('b')
"`],
    ["hard links, one to a file it cannot read", "echo shared > a && ln a b && mkdir h && ln a h/c && (ln /etc/shadow shadow-link || true)"],
    ["paths longer than PATH_MAX", `python3 -c "
import os
os.mkdir('long'); os.chdir('long')
for i in range(24):
    os.mkdir('a' * 200); os.chdir('a' * 200)
open(':' * 200, 'w').write('deep')
"`],
  ];
  for (const [what, command] of attacks) {
    it(
      `${what}: saved and restored without an error, the rest intact`,
      async () => {
        const sandbox = await newSandbox();
        const made = await sandbox.exec(`echo keep > keep.txt && ${command.replace("CANARY_PATH", canaryPath)}`, { timeoutMs: 120_000 });
        expect(made.exitCode, made.stderr).toBe(0);
        const notes: string[] = [];
        const version = await store.save(sandbox.io, { onNote: (line) => notes.push(line) });
        expectCleanStore();
        const again = await store.save(sandbox.io, { base: version.id });
        expect(again.changedBytes).toBeLessThanOrEqual(version.changedBytes);
        const target = await newSandbox();
        const restoreNotes: string[] = [];
        await store.restore(version.id, target.io, { onNote: (line) => restoreNotes.push(line) });
        expect((await target.exec("cat keep.txt")).stdout).toBe("keep\n");
        const listing = await store.list(version.id);
        expect(listing.some((entry) => entry.path === "keep.txt")).toBe(true);
        await sandbox.destroy();
        await target.destroy();
      },
      TEST_TIMEOUT,
    );
  }
});
