// The contract's words are defined once, in src/contract: a second copy of the
// session statuses, the agent-name rule or the limit reasons anywhere else in
// src/ fails here.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const src = resolve(import.meta.dirname, "../../src");
const files = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []));

const COPIES: Array<[string, RegExp]> = [
  ["the session statuses", /["']starting["']\s*[,|]\s*["']active["']/],
  ["the agent-name rule", /a-zA-Z0-9_-\]\{1,64\}/],
  ["the limit reasons", /["']sandbox_oom["']\s*\|\s*["']sandbox_pids["']/],
];

function copiesIn(text: string): string[] {
  return COPIES.filter(([, pattern]) => pattern.test(text)).map(([name]) => name);
}

describe("one vocabulary", () => {
  it("defines the session statuses, the agent-name rule and the limit reasons only in src/contract", () => {
    const found = files(src)
      .filter((file) => !relative(src, file).startsWith("contract"))
      .flatMap((file) => copiesIn(readFileSync(file, "utf8")).map((name) => `${relative(src, file)}: ${name}`));
    expect(found).toEqual([]);
    expect(copiesIn(readFileSync(join(src, "contract", "index.ts"), "utf8"))).toHaveLength(2);
  });

  it("recognizes a copy when one appears", () => {
    expect(copiesIn('const S = ["starting", "active", "paused"];')).toEqual(["the session statuses"]);
    expect(copiesIn("type R = 'sandbox_oom' | 'sandbox_pids';")).toEqual(["the limit reasons"]);
    expect(copiesIn("/^[a-zA-Z0-9_-]{1,64}$/")).toEqual(["the agent-name rule"]);
  });
});
