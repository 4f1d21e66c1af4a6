// Runs `ash` command lines in the test's own process, through the same error
// boundary as the binary: no process per case. Output written to stdout and
// stderr while the command runs is captured and kept from the test's output.
import { runAsh } from "../../src/cli/app";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

let queue: Promise<unknown> = Promise.resolve();

/** Runs one command line in `cwd` with `env` added; one at a time (cwd and env are the process's). */
export function ashInProcess(args: string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}): Promise<CliRun> {
  const run = queue.then(() => runOnce(args, options));
  queue = run.catch(() => undefined);
  return run;
}

async function runOnce(args: string[], options: { cwd?: string; env?: Record<string, string | undefined> }): Promise<CliRun> {
  const saved = { cwd: process.cwd(), env: { ...process.env }, out: process.stdout.write, err: process.stderr.write };
  let stdout = "";
  let stderr = "";
  const capture = (append: (text: string) => void) =>
    ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      append(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
      const done = rest.find((arg) => typeof arg === "function") as (() => void) | undefined;
      done?.();
      return true;
    }) as typeof process.stdout.write;
  try {
    if (options.cwd) process.chdir(options.cwd);
    for (const [name, value] of Object.entries({ NO_COLOR: "1", ...options.env })) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    process.stdout.write = capture((text) => (stdout += text));
    process.stderr.write = capture((text) => (stderr += text));
    const code = await runAsh(args);
    return { code, stdout, stderr };
  } finally {
    process.stdout.write = saved.out;
    process.stderr.write = saved.err;
    process.chdir(saved.cwd);
    for (const name of Object.keys(process.env)) if (!(name in saved.env)) delete process.env[name];
    Object.assign(process.env, saved.env);
  }
}
