// Hostile workspace uploads: every archive here tries to write outside the
// workspace, make something other than files, folders and inside links, or
// unpack past the size limit. Each gets a 4xx naming the problem, and the
// workspace (and the host) is left exactly as it was.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { gzipSync } from "node:zlib";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { tarGzOf, tarOf, type RawEntry } from "../helpers/tar-build";

describe("hostile workspace uploads", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let sessionId: string;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_MAX_UPLOAD_BYTES: "1048576" } });
    await server.api("/api/agents", { method: "POST", json: agentUpload("target", { "keep.txt": "kept" }) });
    sessionId = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "target" } })).json()).session.id;
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const exec = async (command: string) => (await (await server.api(`/api/sessions/${sessionId}/exec`, { method: "POST", json: { command } })).json()).stdout as string;
  /** Every path in the workspace, with types and link targets, and whether the escapes landed anywhere. */
  const state = () => exec("find . -printf '%y %p %l\\n' | sort; ls /tmp/escape.txt ../escape.txt ../../escape.txt 2>&1 | grep -v 'No such file' || true");
  const upload = (body: Buffer, query = "") => server.api(`/api/sessions/${sessionId}/workspace${query}`, { method: "POST", body, headers: { "content-type": "application/gzip" } });

  const good: RawEntry = { name: "innocent.txt", content: "first entry is fine" };
  const cases: Array<[string, RawEntry[], RegExp]> = [
    ["a path with ..", [good, { name: "../escape.txt", content: "x" }], /"\.\."/],
    ["a deeper ..", [good, { name: "a/../../escape.txt", content: "x" }], /"\.\."/],
    ["an absolute path", [good, { name: "/tmp/escape.txt", content: "x" }], /absolute path/],
    ["a symlink to an absolute path", [good, { name: "etc", type: "symlink", linkname: "/etc" }], /absolute path/],
    ["a symlink climbing out", [good, { name: "a/up", type: "symlink", linkname: "../../.." }], /points outside/],
    ["a file written through an archive symlink", [good, { name: "d", type: "dir" }, { name: "d/l", type: "symlink", linkname: "." }, { name: "d/l/x", content: "x" }], /symlink/],
    ["a chain of links leading out", [good, { name: "d/", type: "dir" }, { name: "d/up", type: "symlink", linkname: ".." }, { name: "out", type: "symlink", linkname: "d/up/.." }], /symlink/],
    ["a hard link to a host file", [good, { name: "passwd", type: "hardlink", linkname: "/etc/passwd" }], /absolute path|hard link/],
    ["a hard link climbing out", [good, { name: "shadow", type: "hardlink", linkname: "../../etc/shadow" }], /"\.\."|hard link/],
    ["a hard link to a file not in the archive", [good, { name: "k", type: "hardlink", linkname: "keep.txt" }], /hard link/],
    ["a character device", [good, { name: "null2", type: "char" }], /device/],
    ["a FIFO", [good, { name: "pipe", type: "fifo" }], /device, FIFO/],
    ["a file and a folder of one name", [good, { name: "x", content: "x" }, { name: "x/y", content: "y" }], /folder/],
  ];

  it.each(cases)("refuses %s and writes nothing", async (_what, entries, message) => {
    const before = await state();
    const r = await upload(tarGzOf(entries));
    expect(r.status).toBe(400);
    const body = await r.json();
    expect(body).toEqual({ error: expect.stringMatching(message), statusCode: 400 });
    expect(await state()).toBe(before);
  });

  it("refuses a decompression bomb with 413 as soon as it unpacks past the limit", async () => {
    const before = await state();
    // 64 MiB of zeros gzip to about 64 KiB: far under the body limit, far over the unpacked one.
    const bomb = gzipSync(tarOf([good, { name: "zeros.bin", content: Buffer.alloc(64 * 1024 * 1024) }]));
    expect(bomb.length).toBeLessThan(1024 * 1024);
    const r = await upload(bomb);
    expect(r.status).toBe(413);
    expect((await r.json()).error).toMatch(/unpacks to more than 1048576 bytes/);
    expect(await state()).toBe(before);
  });

  it("refuses a body past the upload limit with 413, and garbage with 400", async () => {
    const before = await state();
    const big = await upload(Buffer.alloc(2 * 1024 * 1024, 1));
    expect(big.status).toBe(413);
    const garbage = await upload(Buffer.from("this is not an archive at all, not even close".repeat(20)));
    expect(garbage.status).toBe(400);
    const badGzip = await upload(Buffer.from([0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7]));
    expect(badGzip.status).toBe(400);
    const target = await upload(tarGzOf([good]), "?targetPath=../../tmp");
    expect(target.status).toBe(400);
    expect(await state()).toBe(before);
    // The server still serves, and a good archive still goes in.
    expect((await upload(tarGzOf([good]))).status).toBe(201);
    expect(await exec("cat innocent.txt")).toBe("first entry is fine");
  });

  it("answers a streamed gzip body past the upload limit with 413, without an error nobody handles", async () => {
    const before = await state();
    const unhandled = async () => {
      const text = await (await server.api("/metrics")).text();
      return [...text.matchAll(/^ash_unhandled_errors_total\{kind="\w+"\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
    };
    const errorsBefore = await unhandled();
    // Incompressible files, each under the limit: the body passes 1 MiB long before what it unpacks to does.
    const gz = gzipSync(tarOf(Array.from({ length: 48 }, (_, i) => ({ name: `r${i}.bin`, content: randomBytes(64 * 1024) }))));
    // Chunked, on a connection of its own (the server closes it after the 413).
    const status = await new Promise<number>((resolve, reject) => {
      const url = new URL(`${server.url}/api/sessions/${sessionId}/workspace`);
      const req = httpRequest(
        { host: url.hostname, port: url.port, path: url.pathname, method: "POST", agent: false, headers: { authorization: `Bearer ${server.apiKey}`, "content-type": "application/gzip" } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on("error", reject);
      // Bounded: an upload that never answers (the body's error lost on the way) shows as status 0.
      req.setTimeout(30_000, () => {
        req.destroy();
        resolve(0);
      });
      (async () => {
        for (let at = 0; at < gz.length; at += 64 * 1024) {
          if (req.destroyed) return;
          if (!req.write(gz.subarray(at, at + 64 * 1024))) await new Promise((r) => req.once("drain", r));
        }
        req.end();
      })().catch(() => undefined);
    });
    expect(status).toBe(413);
    expect(await unhandled()).toBe(errorsBefore);
    expect(await state()).toBe(before);
  });

  it("refuses an upload that clashes with the workspace with 409, before writing", async () => {
    const before = await state();
    const r = await upload(tarGzOf([{ name: "aaa-first.txt", content: "x" }, { name: "keep.txt/inner", content: "x" }]));
    expect(r.status).toBe(409);
    expect((await r.json()).error).toMatch(/"keep\.txt" is a file in the workspace/);
    expect(await state()).toBe(before);
  });
});
