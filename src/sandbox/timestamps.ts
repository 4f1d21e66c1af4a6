import { mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Change times of this file system are kept to the nanosecond: the kernel's coarse clock lags by at most a tick. */
const FINE_MARGIN_MS = 50;
/** Change times kept to the second (or unknown): a change may read as up to a second (two on some) earlier. */
export const COARSE_MARGIN_MS = 2000;

/**
 * How far before a save's start a later save must list changes from, for
 * sandbox folders under `dir`: a change's ctime may read earlier than the
 * moment it happened by the file system's timestamp step and the coarse
 * clock's tick. Probed with a few files of its own (removed again).
 */
export async function changeTimeMarginMs(dir: string): Promise<number> {
  await mkdir(dir, { recursive: true });
  const probe = await mkdtemp(join(dir, ".ctime-"));
  try {
    for (let i = 0; i < 3; i++) {
      const file = join(probe, String(i));
      await writeFile(file, "");
      // A file system that keeps whole seconds shows no fraction, every time.
      if ((await stat(file, { bigint: true })).ctimeNs % 1_000_000_000n !== 0n) return FINE_MARGIN_MS;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    return COARSE_MARGIN_MS;
  } finally {
    await rm(probe, { recursive: true, force: true });
  }
}
