import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { lineLimit } from "../../src/sandbox/sandbox-process";

// What the server reads from an agent process's stdout a line at a time (into its own memory)
// has a bounded line length: past it the process is stopped and nothing more is passed on.
async function through(chunks: string[], max: number): Promise<{ out: string; overruns: number }> {
  let overruns = 0;
  const guard = lineLimit(max, () => overruns++);
  let out = "";
  guard.on("data", (c: Buffer) => (out += c.toString()));
  await new Promise<void>((resolve, reject) => Readable.from(chunks.map((c) => Buffer.from(c))).pipe(guard).on("end", resolve).on("error", reject));
  return { out, overruns };
}

describe("the agent stdout line limit", () => {
  it("passes lines up to the limit, however they are cut into chunks", async () => {
    expect(await through(["abc", "de\n12", "345\n", "x"], 5)).toEqual({ out: "abcde\n12345\nx", overruns: 0 });
  });

  it("stops at a line that grows past the limit across chunks, and passes nothing after", async () => {
    expect(await through(["ok\nabc", "def", "\nmore\n"], 5)).toEqual({ out: "ok\nabc", overruns: 1 });
  });

  it("stops at a long line inside one chunk, before or after a newline", async () => {
    expect(await through(["abcdefgh\nok\n"], 5)).toEqual({ out: "", overruns: 1 });
    expect(await through(["ok\nabcdefgh"], 5)).toEqual({ out: "", overruns: 1 });
  });
});
