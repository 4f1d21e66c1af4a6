// Runs the benchmarks one after another (each prints its own table with the
// baseline measured in the same run) and a header with the date, the machine
// and its load, for docs/benchmarks.md.
//
//   npx tsx bench/run.ts                 every benchmark except the image build
//   npx tsx bench/run.ts turn-latency    only the ones named
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";

const here = import.meta.dirname;
// The image build takes minutes and needs Docker: only when named.
const onRequest = new Set(["image"]);
const all = readdirSync(here)
  .filter((file) => file.endsWith(".ts") && !["run.ts", "stats.ts"].includes(file))
  .map((file) => file.slice(0, -3))
  .sort();
const named = process.argv.slice(2);
const unknown = named.filter((name) => !all.includes(name));
if (unknown.length > 0) {
  console.error(`Unknown benchmark ${unknown.join(", ")}; there are: ${all.join(", ")}.`);
  process.exit(2);
}
const chosen = named.length > 0 ? named : all.filter((name) => !onRequest.has(name));

const [load1, load5] = loadavg();
console.log(`date ${new Date().toISOString()} · ${cpus().length} × ${cpus()[0]?.model ?? "cpu"} · ${(totalmem() / 2 ** 30).toFixed(0)} GiB · load ${load1!.toFixed(2)} / ${load5!.toFixed(2)} · node ${process.version}`);
let failed = 0;
for (const name of chosen) {
  console.log(`\n## ${name}\n`);
  const run = spawnSync(process.execPath, ["--import", "tsx", join(here, `${name}.ts`)], { stdio: "inherit" });
  if (run.status !== 0) {
    failed++;
    console.error(`${name} failed (exit ${run.status ?? run.signal})`);
  }
}
process.exit(failed > 0 ? 1 : 0);
