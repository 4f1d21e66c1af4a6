import { existsSync } from "node:fs";
import { PassThrough } from "node:stream";
import type { SpawnedProcess } from "@anthropic-ai/claude-agent-sdk";

/**
 * For tests (ASH_TEST_START_HOLD_FILE): the agent process runs, but its
 * output reaches the SDK only once `file` exists, so its start-up stays
 * unfinished for as long as a test needs (no clock involved).
 */
export function holdOutputUntil(file: string, child: SpawnedProcess): SpawnedProcess {
  const held = new PassThrough();
  let exited = false;
  child.on("exit", () => (exited = true));
  const check = () => {
    if (existsSync(file) || exited) child.stdout.pipe(held);
    else setTimeout(check, 50).unref();
  };
  check();
  return new Proxy(child, {
    get(target, key) {
      if (key === "stdout") return held;
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** For tests (ASH_TEST_TEARDOWN_HOLD_FILE): resolves once `file` exists. */
export function untilFileExists(file: string): Promise<void> {
  return new Promise((resolve) => {
    const check = () => (existsSync(file) ? resolve() : setTimeout(check, 50));
    check();
  });
}
