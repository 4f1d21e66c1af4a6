// The import graph of src/ follows the layer order in docs/decisions/layers.md:
// a module imports its own layer or one below it, never one above. Read from the
// sources, so a new import that breaks the order fails here.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { describe, expect, it } from "vitest";

const src = resolve(import.meta.dirname, "../../src");

/** Bottom to top; a top-level file or folder of src/ per name. */
const LAYERS: string[][] = [
  ["contract", "errors", "retry", "version", "config-error", "env-values", "config"],
  ["db"],
  ["observability"],
  ["agents", "sandbox", "snapshots", "runtime", "gateway", "vault", "cluster"],
  ["sessions", "queue", "evals"],
  ["server"],
  ["client", "runspec"],
  ["cli", "testcontainers", "index"],
];
/** Parts that may import less than their layer allows: the client runs in browsers too. */
const ONLY: Record<string, string[]> = { client: ["client", "contract"], runspec: ["runspec", ...LAYERS[0]!] };

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? files(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : [],
  );
}

const partOf = (file: string) => relative(src, file).split(sep)[0]!.replace(/\.ts$/, "");
const levelOf = (part: string) => LAYERS.findIndex((layer) => layer.includes(part));

function imports(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const found: string[] = [];
  for (const match of text.matchAll(/(?:^|\n)\s*(?:import|export)[^;'"]*?from\s*["'](\.{1,2}\/[^"']+)["']|import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g)) {
    found.push((match[1] ?? match[2])!);
  }
  return found;
}

/** Every import that breaks the order, as "file imports spec (from → to)". */
function violations(entries: Array<{ file: string; specs: string[] }>): string[] {
  const wrong: string[] = [];
  for (const { file, specs } of entries) {
    const from = partOf(file);
    for (const spec of specs) {
      const target = resolve(dirname(file), spec);
      if (!target.startsWith(src + sep)) continue; // package.json, templates/
      const to = partOf(target.endsWith(".ts") || target.endsWith(".json") ? target : `${target}.ts`);
      if (to === from) continue;
      const allowed = ONLY[from] ? ONLY[from]!.includes(to) : levelOf(to) <= levelOf(from);
      if (!allowed) wrong.push(`${relative(src, file)} imports ${spec} (${from} → ${to})`);
    }
  }
  return wrong;
}

describe("the layers of src/", () => {
  const all = files(src);

  it("names every part of src/ in exactly one layer", () => {
    const parts = [...new Set(all.map(partOf))].sort();
    for (const part of parts) expect(levelOf(part), part).toBeGreaterThanOrEqual(0);
    expect(LAYERS.flat().length).toBe(new Set(LAYERS.flat()).size);
  });

  it("has no import from a layer above, and the client imports only the contract", () => {
    expect(violations(all.map((file) => ({ file, specs: imports(file) })))).toEqual([]);
  });

  it("catches an import from above, and a client import of the server", () => {
    expect(imports(join(src, "server", "errors.ts"))).toContain("../errors");
    expect(
      violations([
        { file: join(src, "sandbox", "pool.ts"), specs: ["../server/errors", "../errors", "./limits"] },
        { file: join(src, "client", "client.ts"), specs: ["../db/types", "../contract"] },
      ]),
    ).toEqual(["sandbox/pool.ts imports ../server/errors (sandbox → server)", "client/client.ts imports ../db/types (client → db)"]);
  });
});
