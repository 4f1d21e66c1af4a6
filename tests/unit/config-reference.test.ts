// Keeps docs/configuration.md and the code in step: every environment variable
// the code reads is documented, and every documented one is still read.
import { readdir, readFile } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "../..");
const PAGE = "docs/configuration.md";

/**
 * Read by the code but not configuration, so not on the page. Each entry
 * must still be read somewhere (a stale entry fails the test).
 */
const NOT_CONFIGURATION: Record<string, string> = {
  // Where the CLI finds the user's home folder (~/.ash); the standard meaning, nothing Ash-specific.
  HOME: "the user's home folder",
  // Where executables are looked up (bubblewrap, setpriv); the standard meaning.
  PATH: "the executable search path",
  // Terminal capability; the CLI only checks for "dumb" to turn colours off.
  TERM: "the terminal type",
};

/** The heading whose table lists variables read by libraries, not by Ash's own code. */
const LIBRARY_SECTION = /^## Read by libraries/;

type Reads = Map<string, string[]>;

const NAME = "[A-Z_][A-Z0-9_]*[A-Z0-9]";
/** Not followed by an assignment (`=`, `+=`, `??=`, `||=`), so `env.X = 1` is a write. */
const NOT_ASSIGNED = String.raw`(?!\s*(?:=(?!=)|\+=|\?\?=|\|\|=))`;

/** Removes block and line comments (a `//` after a `:`, as in URLs, is kept). */
function stripTsComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, (m) => m.replace(/[^\n]/g, " ")).replace(/(^|[^:\\])\/\/.*$/gm, "$1");
}

/**
 * Names a TypeScript file reads from an environment:
 * - `process.env.NAME`, `process.env["NAME"]`;
 * - `<something>env.NAME` / `<something>Env["NAME"]` (an env map passed around: `env`, `hostEnv`, `spec.env`);
 * - helper calls `fn(env, "NAME", ...)`, as config.ts does with text/integer/boolean;
 * - `const { NAME } = process.env`.
 * Assignments (`env.NAME = ...`) and `delete env.NAME` are writes and do not count.
 */
export function scanTypeScript(source: string): Array<{ name: string; line: number }> {
  const code = stripTsComments(source);
  const found: Array<{ name: string; index: number }> = [];
  const patterns = [
    new RegExp(String.raw`(?<!delete\s+)\b\w*(?:env|Env)\.(${NAME})\b${NOT_ASSIGNED}`, "g"),
    new RegExp(String.raw`(?<!delete\s+)\b\w*(?:env|Env)\[\s*["'\`](${NAME})["'\`]\s*\]${NOT_ASSIGNED}`, "g"),
    new RegExp(String.raw`\b\w+\(\s*\w*(?:env|Env)\s*,\s*["'\`](${NAME})["'\`]`, "g"),
  ];
  for (const pattern of patterns) for (const m of code.matchAll(pattern)) found.push({ name: m[1], index: m.index! });
  for (const m of code.matchAll(/\b(?:const|let|var)\s*\{([^}]*)\}\s*=\s*process\.env\b/g)) {
    for (const part of m[1].split(",")) {
      const key = part.split(/[:=]/)[0].trim();
      if (new RegExp(`^${NAME}$`).test(key)) found.push({ name: key, index: m.index! });
    }
  }
  return found.map(({ name, index }) => ({ name, line: code.slice(0, index).split("\n").length }));
}

/**
 * Names a shell script uses: `$NAME`, `${NAME...}`, `NAME=...`, `export NAME`.
 * Upper-case only: by convention lower-case names are the script's own variables.
 */
export function scanShell(source: string): Array<{ name: string; line: number }> {
  const found: Array<{ name: string; line: number }> = [];
  source.split("\n").forEach((raw, i) => {
    const line = raw.replace(/(^|\s)#.*$/, "$1");
    const patterns = [new RegExp(String.raw`\$\{?(${NAME})`, "g"), new RegExp(String.raw`^\s*(?:export\s+)?(${NAME})=`, "g"), new RegExp(String.raw`\bexport\s+(${NAME})\b`, "g")];
    for (const p of patterns) for (const m of line.matchAll(p)) found.push({ name: m[1], line: i + 1 });
  });
  return found;
}

/**
 * Names a Dockerfile declares or reads: `ARG NAME`, `ENV NAME=... NAME2=...`
 * (continuation lines included), `$NAME` / `${NAME}`, and `process.env.NAME`
 * in the health check. Upper-case only: lower-case `npm_config_*` are build
 * settings for npm, not configuration of the image.
 */
export function scanDockerfile(source: string): Array<{ name: string; line: number }> {
  const found: Array<{ name: string; line: number }> = [];
  const lines = source.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (/^\s*#/.test(lines[i])) continue;
    const start = i;
    let instruction = lines[i];
    while (/\\\s*$/.test(instruction) && i + 1 < lines.length) instruction = instruction.replace(/\\\s*$/, " ") + lines[++i];
    const at = start + 1;
    const arg = new RegExp(String.raw`^\s*ARG\s+(${NAME})\b`).exec(instruction);
    if (arg) found.push({ name: arg[1], line: at });
    if (/^\s*ENV\s/.test(instruction)) for (const m of instruction.matchAll(new RegExp(String.raw`\b(${NAME})=`, "g"))) found.push({ name: m[1], line: at });
    for (const m of instruction.matchAll(new RegExp(String.raw`\$\{?(${NAME})`, "g"))) found.push({ name: m[1], line: at });
    for (const m of instruction.matchAll(new RegExp(String.raw`process\.env\.(${NAME})`, "g"))) found.push({ name: m[1], line: at });
  }
  return found;
}

/** Names the templates take from the host: run-spec `envFromHost`, Compose `${NAME}` interpolation in the services. */
export function scanTemplate(file: string, source: string): string[] {
  const json = JSON.parse(source);
  const names: string[] = [];
  if (json.envFromHost) names.push(...(json.envFromHost.always ?? []), ...(json.envFromHost.whenSet ?? []));
  const walk = (value: unknown): void => {
    if (typeof value === "string") for (const m of value.matchAll(new RegExp(String.raw`\$\{(${NAME})`, "g"))) names.push(m[1]);
    else if (Array.isArray(value)) value.forEach(walk);
    else if (value && typeof value === "object") Object.values(value).forEach(walk);
  };
  if (file.endsWith("compose.json")) walk(json.services);
  return names;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else if (/\.(ts|mts|cts)$/.test(entry.name) && !entry.name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

async function codeReads(): Promise<Reads> {
  const reads: Reads = new Map();
  const note = (name: string, where: string) => reads.set(name, [...(reads.get(name) ?? []), where]);
  for (const file of await filesUnder(join(ROOT, "src"))) {
    for (const { name, line } of scanTypeScript(await readFile(file, "utf8"))) note(name, `${relative(ROOT, file)}:${line}`);
  }
  for (const { name, line } of scanShell(await readFile(join(ROOT, "entrypoint.sh"), "utf8"))) note(name, `entrypoint.sh:${line}`);
  for (const { name, line } of scanDockerfile(await readFile(join(ROOT, "Dockerfile"), "utf8"))) note(name, `Dockerfile:${line}`);
  for (const file of ["templates/run-spec.json", "templates/compose.json"]) {
    for (const name of scanTemplate(file, await readFile(join(ROOT, file), "utf8"))) note(name, file);
  }
  return reads;
}

interface Documented {
  /** Name → the sections whose tables list it. */
  own: Map<string, string[]>;
  library: Map<string, string[]>;
  badRows: string[];
}

/** Variables in the first column of the page's tables, by section. */
export function documentedNames(markdown: string): Documented {
  const own = new Map<string, string[]>();
  const library = new Map<string, string[]>();
  const badRows: string[] = [];
  let section = "";
  let inLibrary = false;
  markdown.split("\n").forEach((line, i) => {
    if (/^#{2,3} /.test(line)) {
      section = line.replace(/^#+ /, "");
      if (/^## /.test(line)) inLibrary = LIBRARY_SECTION.test(line);
      return;
    }
    const row = /^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|(.*)\|\s*$/.exec(line);
    if (!row) return;
    const cells = row[2].split(/(?<!\\)\|/).map((c) => c.trim());
    if (cells.length !== 3 || cells.some((c) => c === "")) badRows.push(`line ${i + 1}: ${row[1]} needs type, default and meaning`);
    const target = inLibrary ? library : own;
    target.set(row[1], [...(target.get(row[1]) ?? []), section]);
  });
  return { own, library, badRows };
}

describe("the configuration reference", () => {
  it("lists every variable the code reads, and only those", async () => {
    const reads = await codeReads();
    const page = documentedNames(await readFile(join(ROOT, PAGE), "utf8"));
    const problems: string[] = [];

    const missing = [...reads.keys()].filter((name) => !page.own.has(name) && !(name in NOT_CONFIGURATION)).sort();
    if (missing.length) {
      problems.push(
        `Read by the code but not in ${PAGE} (add a row to its component's table):\n` +
          missing.map((name) => `  - ${name}  (${reads.get(name)!.slice(0, 4).join(", ")}${reads.get(name)!.length > 4 ? ", …" : ""})`).join("\n"),
      );
    }
    const stale = [...page.own.keys()].filter((name) => !reads.has(name)).sort();
    if (stale.length) {
      problems.push(
        `Listed in ${PAGE} but read nowhere in src/, entrypoint.sh, Dockerfile or templates/ (remove the row, or move it under "Read by libraries"):\n` +
          stale.map((name) => `  - ${name}  (section: ${page.own.get(name)!.join("; ")})`).join("\n"),
      );
    }
    const misplaced = [...page.library.keys()].filter((name) => reads.has(name)).sort();
    if (misplaced.length) {
      problems.push(
        `Listed under "Read by libraries" but Ash's code reads them (move each to its component's table):\n` +
          misplaced.map((name) => `  - ${name}  (${reads.get(name)!.slice(0, 4).join(", ")})`).join("\n"),
      );
    }
    const allowStale = Object.keys(NOT_CONFIGURATION).filter((name) => !reads.has(name));
    if (allowStale.length) problems.push(`NOT_CONFIGURATION in this test names variables nothing reads any more: ${allowStale.join(", ")}`);
    const allowDocumented = Object.keys(NOT_CONFIGURATION).filter((name) => page.own.has(name));
    if (allowDocumented.length) problems.push(`Both documented and in NOT_CONFIGURATION (pick one): ${allowDocumented.join(", ")}`);
    if (page.badRows.length) problems.push(`Incomplete rows in ${PAGE}:\n  - ${page.badRows.join("\n  - ")}`);

    expect(problems.join("\n\n")).toBe("");
  });

  it("documents the variables this release added", async () => {
    const page = documentedNames(await readFile(join(ROOT, PAGE), "utf8"));
    for (const name of ["ASH_METRICS_PUBLIC", "ASH_TELEMETRY_URL", "ASH_TELEMETRY_TOKEN", "ASH_SANDBOX_OTEL", "ASH_LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"]) {
      expect(page.own.has(name), name).toBe(true);
    }
  });
});

describe("the scanning rules", () => {
  const names = (found: Array<{ name: string }>) => [...new Set(found.map((f) => f.name))].sort();

  it("TypeScript: reads count, writes and comments do not", () => {
    const source = [
      `const a = process.env.ASH_ONE ?? "x";`,
      `const b = process.env["ASH_TWO"];`,
      `const c = integer(env, "ASH_THREE", 1, 0, 9);`,
      `const d = hostEnv.ASH_FOUR || spec.env.ASH_FIVE;`,
      `if (process.env.ASH_SIX === "1") {}`,
      `const { ASH_SEVEN, ASH_EIGHT: renamed } = process.env;`,
      `env.WRITTEN_ONE = "x";`,
      `env["WRITTEN_TWO"] = "y";`,
      `delete env.DELETED;`,
      `// process.env.IN_LINE_COMMENT`,
      `/* process.env.IN_BLOCK_COMMENT */`,
      ` * .withKey(process.env.IN_DOC_COMMENT)`,
      `const url = "http://host/path"; const e = process.env.ASH_NINE;`,
    ].join("\n");
    const withDocComment = source.replace(" * .withKey", "/**\n * .withKey").replace("IN_DOC_COMMENT)", "IN_DOC_COMMENT)\n */");
    expect(names(scanTypeScript(withDocComment))).toEqual(["ASH_EIGHT", "ASH_FIVE", "ASH_FOUR", "ASH_NINE", "ASH_ONE", "ASH_SEVEN", "ASH_SIX", "ASH_THREE", "ASH_TWO"]);
    expect(scanTypeScript("x\n\ny = process.env.ON_LINE_THREE")).toEqual([{ name: "ON_LINE_THREE", line: 3 }]);
  });

  it("shell: upper-case names used, set or exported; comments and lower-case locals ignored", () => {
    const source = ["# uses $IN_COMMENT", "base=/x", 'echo "$base ${ASH_USED:-1}"', "ASH_SET=1", "export ASH_SET", "export ASH_EXPORTED=2", 'x="$lower"'].join("\n");
    expect(names(scanShell(source))).toEqual(["ASH_EXPORTED", "ASH_SET", "ASH_USED"]);
  });

  it("Dockerfile: ARG, ENV (across continuation lines), references; lower-case npm settings ignored", () => {
    const source = ["# ENV IN_COMMENT=1", "ARG BASE_IMAGE=node", "FROM ${BASE_IMAGE}", "ENV npm_config_x=1 \\", "    ASH_A=1 \\", "    ASH_B=2", "CMD node -e \"process.env.ASH_C\""].join("\n");
    const found = scanDockerfile(source);
    expect(names(found)).toEqual(["ASH_A", "ASH_B", "ASH_C", "BASE_IMAGE"]);
    expect(found.find((f) => f.name === "ASH_B")!.line).toBe(4);
  });

  it("templates: host variables of the run spec, interpolation in Compose services only", () => {
    expect(scanTemplate("run-spec.json", JSON.stringify({ envFromHost: { always: ["A_KEY"], whenSet: ["B_URL"] } }))).toEqual(["A_KEY", "B_URL"]);
    const compose = { $comment: "${NOT_THIS}", services: { ash: { environment: { X: "${C_KEY}", Y: "${D_KEY:?required}" } } } };
    expect(scanTemplate("compose.json", JSON.stringify(compose))).toEqual(["C_KEY", "D_KEY"]);
  });

  it("reads the page's tables by section, flagging rows without type, default or meaning", () => {
    const page = ["## Server", "| Variable | Type | Default | Meaning |", "|---|---|---|---|", "| `A_ONE` | integer | `1` | Does a. |", "| `A_TWO` | text |  | |", "## Read by libraries Ash uses", "| `LIB_X` | text | unset | Read by a library. |"].join("\n");
    const doc = documentedNames(page);
    expect([...doc.own.keys()]).toEqual(["A_ONE", "A_TWO"]);
    expect([...doc.library.keys()]).toEqual(["LIB_X"]);
    expect(doc.badRows).toEqual(["line 5: A_TWO needs type, default and meaning"]);
  });
});
