// Shared pieces of the adversarial workspace suites.
import { gunzipSync } from "node:zlib";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

/**
 * Run inside a sandbox with python3: `setup <outside-path>` pads race/ with
 * 4,000 files and makes 20 pairs of a regular file and a symlink (half to
 * /proc/self/environ, half to `outside-path`); `swap <seconds> <rounds>`
 * exchanges each pair with renameat2(RENAME_EXCHANGE) until race/stop
 * exists, the seconds have passed or the rounds are done, whichever comes
 * first. It runs in the foreground of its own exec call: the exec's
 * process namespace ends with it, so nothing outlives the call.
 */
export const SWAPPER = String.raw`
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
SYS_renameat2, AT_FDCWD, RENAME_EXCHANGE = 316, -100, 2
pairs = [(("race/f%02d" % i).encode(), ("race/l%02d" % i).encode()) for i in range(20)]
if sys.argv[1] == "setup":
    os.makedirs("race", exist_ok=True)
    for i in range(4000):
        with open("race/pad%05d" % i, "w") as f: f.write("x")
    for i, (a, b) in enumerate(pairs):
        for p in (a, b):
            if os.path.lexists(p): os.unlink(p)
        with open(a, "w") as f: f.write("innocent\n")
        os.symlink("/proc/self/environ" if i % 2 == 0 else sys.argv[2], b)
    print("ready")
else:
    seconds, rounds = float(sys.argv[2]), int(sys.argv[3])
    if os.path.exists("race/stop"): os.unlink("race/stop")
    deadline, n, ok = time.monotonic() + seconds, 0, 0
    while n < rounds and time.monotonic() < deadline:
        for a, b in pairs:
            if libc.syscall(SYS_renameat2, ctypes.c_int(AT_FDCWD), a, ctypes.c_int(AT_FDCWD), b, ctypes.c_uint(RENAME_EXCHANGE)) == 0: ok += 1
        n += 1
        if n == 1: open("race/swapping", "w").close()
        if n % 50 == 0 and os.path.exists("race/stop"): break
    if os.path.exists("race/swapping"): os.unlink("race/swapping")
    print("swapped", n, ok)
`;

/** Every byte stored under a folder, file by file (for scanning snapshots). */
export function filesUnder(dir: string): Array<{ path: string; data: Buffer }> {
  const out: Array<{ path: string; data: Buffer }> = [];
  let names: string[] = [];
  try {
    names = readdirSync(dir, { recursive: true }) as string[];
  } catch {
    return out;
  }
  for (const name of names) {
    const path = join(dir, String(name));
    try {
      if (statSync(path).isFile()) out.push({ path, data: readFileSync(path) });
    } catch {
      // removed meanwhile
    }
  }
  return out;
}

/** The bytes of a files-API answer. */
export function contentOf(file: { content: string; encoding: string }): Buffer {
  return Buffer.from(file.content, file.encoding === "base64" ? "base64" : "utf8");
}

export function gunzip(data: Buffer): Buffer {
  return gunzipSync(data);
}
