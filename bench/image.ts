/**
 * Image benchmarks: build times (cold, cached, after a one-line source change),
 * image size, and `docker run` to a healthy server.
 *
 *   npx tsx bench/image.ts              everything (the cold build takes minutes)
 *   npx tsx bench/image.ts --no-cold    skip the cold build
 *   ASH_BENCH_RUNS=5                    how many `docker run` starts to time
 *
 * Builds go through infra/build-image.sh on a copy of the sources, so the
 * source change never touches the working tree. Containers carry the label
 * ash.bench=image and are removed at the end.
 */
import { execFile } from "node:child_process";
import { appendFile, cp, mkdir, mkdtemp, rm } from "node:fs/promises";
import { get } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const repoRoot = resolve(import.meta.dirname, "..");
const tag = "ash:bench";
const label = "ash.bench=image";
const runs = Number(process.env.ASH_BENCH_RUNS ?? 5);
const cold = !process.argv.includes("--no-cold");

function run(command: string, args: string[], env: Record<string, string> = {}, cwd = repoRoot): Promise<string> {
  return new Promise((done, fail) => {
    execFile(command, args, { cwd, env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024, timeout: 60 * 60_000 }, (error, stdout, stderr) => {
      if (error) fail(new Error(`${command} ${args.join(" ")} failed:\n${stdout}\n${stderr}`));
      else done(String(stdout));
    });
  });
}

const progress = (message: string) => process.stderr.write(`bench/image: ${message}\n`);

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => done(port));
    });
  });
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

/** Status of GET /health, or 0 when nothing answers (node:http keeps the process alive while waiting; fetch may not). */
function healthStatus(port: number): Promise<number> {
  return new Promise((done) => {
    const request = get({ host: "127.0.0.1", port, path: "/health", timeout: 1000 }, (response) => {
      response.resume();
      done(response.statusCode ?? 0);
    });
    request.on("timeout", () => request.destroy());
    request.on("error", () => done(0));
  });
}

async function untilHealthy(port: number): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    if ((await healthStatus(port)) === 200) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the server did not become healthy within about a minute");
}

async function main(): Promise<void> {
  // A private copy of the sources and a private build directory.
  const scratch = await mkdtemp(join(tmpdir(), "ash-bench-image-"));
  const copy = join(scratch, "repo");
  await mkdir(copy);
  for (const path of ["Dockerfile", ".dockerignore", "entrypoint.sh", "package.json", "package-lock.json", "build.config.ts", "tsconfig.json", "bin", "src", "templates", "infra"]) {
    await cp(join(repoRoot, path), join(copy, path), { recursive: true, preserveTimestamps: true });
  }
  const buildDir = cold ? join(scratch, "build") : (process.env.ASH_IMAGE_BUILD_DIR ?? join(tmpdir(), "ash-image-build"));
  const build = (env: Record<string, string> = {}) =>
    run("sh", [join(copy, "infra/build-image.sh"), tag], { ASH_IMAGE_BUILD_DIR: buildDir, ...env }, copy);

  const results: [string, string][] = [];
  try {
    progress(cold ? "cold build" : "first build");
    if (cold) {
      // Empty npm cache and no layer cache: everything is downloaded, compiled and built.
      results.push(["cold build (npm cache fill + docker build --no-cache)", `${(await timed(() => build({ ASH_IMAGE_NO_CACHE: "1" }))).toFixed(1)} s`]);
    } else {
      await build();
    }
    progress("rebuilds");
    results.push(["rebuild, nothing changed", `${(await timed(() => build())).toFixed(1)} s`]);
    await appendFile(join(copy, "src/server/main.ts"), `\n// bench ${Date.now()}\n`);
    results.push(["rebuild after a one-line source change", `${(await timed(() => build())).toFixed(1)} s`]);

    const size = Number((await run("docker", ["image", "inspect", "--format", "{{.Size}}", tag])).trim());
    results.push(["image size", `${(size / 1e6).toFixed(0)} MB`]);

    progress(`${runs} starts`);
    const startTimes: number[] = [];
    for (let i = 0; i < runs; i++) {
      const dataDir = join(scratch, `data-${i}`);
      await mkdir(dataDir);
      const port = await freePort();
      let id = "";
      const seconds = await timed(async () => {
        id = (await run("docker", [
          "run", "-d", "--label", label, "--init", "--cgroupns=host", "-v", `${dataDir}:/data`,
          "-p", `127.0.0.1:${port}:4100`, "--cap-add", "SYS_ADMIN",
          "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
          "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "-e", "ASH_API_KEY=bench-key-0123456789", tag,
        ])).trim();
        await untilHealthy(port);
      });
      startTimes.push(seconds);
      await run("docker", ["rm", "-f", "-v", id]);
    }
    startTimes.sort((a, b) => a - b);
    results.push([
      `docker run -> GET /health 200 (${runs} runs)`,
      `median ${quantile(startTimes, 0.5).toFixed(2)} s, p95 ${quantile(startTimes, 0.95).toFixed(2)} s`,
    ]);
  } finally {
    const ids = (await run("docker", ["ps", "-aq", "--filter", `label=${label}`]).catch(() => "")).split(/\s+/).filter(Boolean);
    if (ids.length) await run("docker", ["rm", "-f", "-v", ...ids]).catch(() => {});
    await rm(scratch, { recursive: true, force: true }).catch(() => {});
  }
  for (const [name, value] of results) console.log(`${name.padEnd(58)} ${value}`);
}

await main();
