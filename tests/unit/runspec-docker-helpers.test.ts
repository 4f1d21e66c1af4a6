import { execFile } from "node:child_process";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import Docker from "dockerode";
import { busyPortMessage, demuxLogs, PullProgress, serverUrl } from "../../src/cli/docker";
import { rejectUnknownFlags } from "../../src/cli/errors";

/** One frame of Docker's multiplexed log stream. */
function frame(stream: 1 | 2, text: string): Buffer {
  const payload = Buffer.from(text);
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

describe("demuxLogs (dockerode's demuxer)", () => {
  const modem = new Docker().modem;
  /** Feeds `chunks` through the demuxer; what reached each writer. */
  async function split(chunks: Buffer[]) {
    const source = new PassThrough();
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const stdout = new PassThrough().on("data", (c: Buffer) => out.push(c));
    const stderr = new PassThrough().on("data", (c: Buffer) => err.push(c));
    const done = demuxLogs(modem, source, stdout, stderr);
    for (const chunk of chunks) source.write(chunk);
    source.end();
    await done;
    return { out: Buffer.concat(out).toString(), err: Buffer.concat(err).toString() };
  }

  it("separates stdout and stderr frames", async () => {
    expect(await split([Buffer.concat([frame(1, "out one\n"), frame(2, "err one\n"), frame(1, "out two\n")])])).toEqual({
      out: "out one\nout two\n",
      err: "err one\n",
    });
  });

  it("waits for the rest of a frame cut anywhere, even inside its header or a character", async () => {
    const all = Buffer.concat([frame(2, "é stderr line\n"), frame(1, "stdout line\n")]);
    for (let cut = 1; cut < all.length; cut++) {
      expect(await split([all.subarray(0, cut), all.subarray(cut)])).toEqual({ out: "stdout line\n", err: "é stderr line\n" });
    }
  });
});

describe("rejectUnknownFlags", () => {
  const defs = { port: { type: "string" }, pull: { type: "boolean" }, env: { type: "string", alias: "e" }, "dry-run": { type: "boolean" } };

  it("accepts the defined flags, their aliases, negations and values", () => {
    expect(() =>
      rejectUnknownFlags(["--port", "1", "--port=2", "--no-pull", "--pull", "-e", "A=1", "-eB=2", "--env", "--port", "--dry-run", "--help", "-", "--", "--anything"], defs, "start"),
    ).not.toThrow();
  });

  it.each([["--prot"], ["--prot=1"], ["-x"], ["--no-port"]])("refuses %s with the command's help hint", (flag) => {
    expect(() => rejectUnknownFlags([flag], defs, "start")).toThrow(/^Unknown option -{1,2}[\w-]+ for ash start; see `ash start --help`\.$/);
  });

  it("does not mistake a flag's value for a flag", () => {
    expect(() => rejectUnknownFlags(["-e", "--weird-value"], defs, "start")).not.toThrow();
  });
});

describe("busyPortMessage", () => {
  it.each([
    "driver failed programming external connectivity on endpoint ash-server: Bind for 0.0.0.0:4100 failed: port is already allocated",
    "Error starting userland proxy: listen tcp4 0.0.0.0:4100: bind: address already in use",
  ])("turns Docker's %j into one sentence", (message) => {
    expect(busyPortMessage({ json: { message } }, 4100)).toBe("Port 4100 is already in use on this machine: stop what uses it or pick another port with --port.");
  });

  it("leaves other errors alone", () => {
    expect(busyPortMessage(new Error("no such image"), 4100)).toBeUndefined();
  });
});

describe("serverUrl", () => {
  const saved = process.env.DOCKER_HOST;
  afterEach(() => {
    if (saved === undefined) delete process.env.DOCKER_HOST;
    else process.env.DOCKER_HOST = saved;
  });

  it("is localhost for a local engine and the engine's host for a TCP one", () => {
    delete process.env.DOCKER_HOST;
    expect(serverUrl(4100)).toBe("http://localhost:4100");
    process.env.DOCKER_HOST = "unix:///run/user/1000/docker.sock";
    expect(serverUrl(8080)).toBe("http://localhost:8080");
    process.env.DOCKER_HOST = "tcp://10.1.2.3:2376";
    expect(serverUrl(4100)).toBe("http://10.1.2.3:4100");
  });
});

describe("PullProgress", () => {
  const events = [
    { status: "Pulling from ash", id: "test" },
    { status: "Already exists", id: "aaaaaaaaaaaa" },
    { status: "Pulling fs layer", id: "bbbbbbbbbbbb" },
    { status: "Downloading", id: "bbbbbbbbbbbb", progressDetail: { current: 500_000, total: 2_000_000 } },
    { status: "Downloading", id: "bbbbbbbbbbbb", progressDetail: { current: 1_500_000, total: 2_000_000 } },
    { status: "Download complete", id: "bbbbbbbbbbbb" },
    { status: "Extracting", id: "bbbbbbbbbbbb", progressDetail: { current: 100, total: 2_000_000 } },
    { status: "Pull complete", id: "bbbbbbbbbbbb" },
    { status: "Digest: sha256:abc" },
    { status: "Status: Downloaded newer image for 127.0.0.1:5000/ash:test" },
  ];

  function render(tty: boolean): string {
    const out = new PassThrough();
    let text = "";
    out.on("data", (c) => (text += c));
    const progress = new PullProgress("127.0.0.1:5000/ash:test", out as unknown as NodeJS.WriteStream, tty);
    for (const event of events) progress.update(event);
    progress.done();
    return text;
  }

  it("writes one line per layer state change when the output is not a terminal", () => {
    expect(render(false).split("\n")).toEqual([
      "Pulling from ash",
      "aaaaaaaaaaaa: Already exists",
      "bbbbbbbbbbbb: Pulling fs layer",
      "bbbbbbbbbbbb: Downloading",
      "bbbbbbbbbbbb: Download complete",
      "bbbbbbbbbbbb: Extracting",
      "bbbbbbbbbbbb: Pull complete",
      "Digest: sha256:abc",
      "Status: Downloaded newer image for 127.0.0.1:5000/ash:test",
      "",
    ]);
  });

  it("rewrites a single line on a terminal, counting layers done and bytes downloaded", () => {
    const states = render(true).split("\r\x1b[2K").filter(Boolean);
    expect(states).toContain("Pulling 127.0.0.1:5000/ash:test: 1 of 2 layers done, 500 kB of 2.0 MB downloaded");
    expect(states).toContain("Pulling 127.0.0.1:5000/ash:test: 1 of 2 layers done, 1.5 MB of 2.0 MB downloaded");
    expect(states.at(-1)).toBe("Pulling 127.0.0.1:5000/ash:test: 2 of 2 layers done, 2.0 MB of 2.0 MB downloaded\n");
    expect(states.join("")).not.toContain("Digest");
  });
});

describe("without a reachable Docker engine", () => {
  const root = join(import.meta.dirname, "../..");
  // The CLI's own process (node + tsx) without a docker binary on PATH, when asked.
  const ash = (args: string[], env: Record<string, string>) =>
    new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(process.execPath, [join(root, "node_modules/tsx/dist/cli.mjs"), join(root, "src/cli/main.ts"), ...args], { env: { ...process.env, NO_COLOR: "1", ...env }, timeout: 60_000 }, (error: any, _out, stderr) =>
        resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stderr }),
      );
    });

  it("says the daemon does not answer, with exit code 3", async () => {
    const result = await ash(["status"], { DOCKER_HOST: "unix:///nonexistent/docker.sock" });
    expect(result.code).toBe(3);
    expect(result.stderr.trim()).toBe(
      'Docker is installed but its daemon does not answer at unix:///nonexistent/docker.sock: start Docker (Docker Desktop, "sudo systemctl start docker", or on a machine without systemd "sudo dockerd &" or infra/docker-engine.sh from the Ash checkout) and try again.',
    );
  });

  it("says nothing about a missing model key when no server is started (the daemon is down)", async () => {
    const env = { ...process.env, DOCKER_HOST: "unix:///nonexistent/docker.sock" } as Record<string, string>;
    delete env.ANTHROPIC_API_KEY;
    const result = await ash(["start", "--no-pull"], env);
    expect(result.code).toBe(3);
    expect(result.stderr).not.toContain("ANTHROPIC_API_KEY");
    expect(result.stderr).toContain("daemon does not answer");
  });

  it("says Docker is not installed when there is neither a docker command nor a socket, with exit code 3", async () => {
    const result = await ash(["stop"], { DOCKER_HOST: "unix:///nonexistent/docker.sock", PATH: "/nonexistent" });
    expect(result.code).toBe(3);
    expect(result.stderr.trim()).toBe("Docker is not installed: Ash runs its server in Docker. Install Docker Engine or Docker Desktop, then run this again.");
  });
});
