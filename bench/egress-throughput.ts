// A 100 MB download from a local server: directly on the host, against the
// same download from inside a sandbox through its loopback bridge (socat)
// and the egress proxies (HTTP CONNECT, plain HTTP, SOCKS5), with curl both
// times. Needs root and bubblewrap, like the sandbox suites.
//
//   npx tsx bench/egress-throughput.ts [rounds=5] [megabytes=100]
import { execFile } from "node:child_process";
import { createServer } from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createSandbox } from "../src/sandbox/spawn";
import { createHttpProxy, createSocksProxy } from "../src/sandbox/egress-proxy";
import { row } from "./stats";

const rounds = Number(process.argv[2] ?? 5);
const megabytes = Number(process.argv[3] ?? 100);
const bytes = megabytes * 1024 * 1024;
const block = Buffer.alloc(1024 * 1024, 7);

const site = createServer((_req, res) => {
  res.writeHead(200, { "content-length": bytes, "content-type": "application/octet-stream" });
  let sent = 0;
  const pump = () => {
    while (sent < bytes) {
      sent += block.length;
      if (!res.write(block)) return void res.once("drain", pump);
    }
    res.end();
  };
  pump();
});
await new Promise<void>((resolve) => site.listen(0, "127.0.0.1", () => resolve()));
const port = (site.address() as { port: number }).port;

const policy = () => ({ allow: ["files.bench"], allowPrivate: false, hosts: { "files.bench": "127.0.0.1" } });
const dataDir = await mkdtemp(join(tmpdir(), "ash-bench-egress-"));
const sandbox = await createSandbox({
  dataDir,
  limits: { memoryMb: 1024, diskMb: 256 },
  network: {
    services: [
      { name: "http", port: 3128, accept: createHttpProxy(policy) },
      { name: "socks", port: 1080, accept: createSocksProxy(policy) },
    ],
  },
});

const curlArgs = `-s -o /dev/null -w '%{speed_download}'`;
const mbps = (bytesPerSecond: string) => Number(bytesPerSecond) / (1024 * 1024);
const run = promisify(execFile);
const samples: Record<string, number[]> = { direct: [], connect: [], http: [], socks: [] };
for (let i = 0; i < rounds; i++) {
  const { stdout } = await run("/bin/sh", ["-c", `curl ${curlArgs} http://127.0.0.1:${port}/`]);
  samples.direct!.push(mbps(stdout));
  for (const [name, flags] of [
    ["connect", "-p -x http://127.0.0.1:3128"],
    ["http", "-x http://127.0.0.1:3128"],
    ["socks", "--socks5-hostname 127.0.0.1:1080"],
  ] as const) {
    const r = await sandbox.exec(`curl ${curlArgs} ${flags} http://files.bench:${port}/`, { timeoutMs: 120_000 });
    if (r.exitCode !== 0) throw new Error(`${name}: ${r.stderr}`);
    samples[name]!.push(mbps(r.stdout));
  }
}
console.log(`egress throughput, ${megabytes} MB from a local server, ${new Date().toISOString()}, node ${process.version}`);
console.log(row("direct on the host (curl)", samples.direct!, "MB/s"));
console.log(row("sandbox -> socat -> HTTP CONNECT proxy", samples.connect!, "MB/s"));
console.log(row("sandbox -> socat -> HTTP proxy (absolute URI)", samples.http!, "MB/s"));
console.log(row("sandbox -> socat -> SOCKS5 proxy", samples.socks!, "MB/s"));
await sandbox.destroy();
site.close();
await rm(dataDir, { recursive: true, force: true });
