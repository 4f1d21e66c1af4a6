import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { toYaml, yamlScalar, type YamlValue } from "../../src/runspec";
import { skipUnlessReady } from "../helpers/requirements";

/** Parses YAML with PyYAML (a YAML 1.1 reader, the one docker-compose 1.29 uses). */
function pyYamlLoad(text: string): unknown {
  const out = execFileSync("python3", ["-c", "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))"], { input: text });
  return JSON.parse(out.toString());
}

const pyYamlSkip = skipUnlessReady(
  "the YAML 1.1 read-back check",
  (() => {
    try {
      pyYamlLoad("a: 1");
      return undefined;
    } catch {
      return "python3 with PyYAML is missing (Debian's python3-yaml comes with docker-compose)";
    }
  })(),
);

describe("yamlScalar", () => {
  it("leaves only unambiguous words plain", () => {
    expect(yamlScalar("postgres")).toBe("postgres");
    expect(yamlScalar("unless-stopped")).toBe("unless-stopped");
    expect(yamlScalar("/cockroach/cockroach")).toBe("/cockroach/cockroach");
  });

  it.each([
    ["4100:4100", "a base-60 number in YAML 1.1"],
    ["no", "a boolean in YAML 1.1"],
    ["on", "a boolean in YAML 1.1"],
    ["null", "null"],
    ["~", "null"],
    ["200", "a number"],
    ["1e3", "a number"],
    ["0x10", "a number"],
    ["${ASH_API_KEY:?set it}", "a mapping start"],
    ["- item", "a list item"],
    ["a: b", "a mapping"],
    ["x # y", "a comment"],
    ["", "null"],
    [" padded ", "whitespace lost"],
    ["*alias", "an alias"],
    ["&anchor", "an anchor"],
    ["!tag", "a tag"],
    ["line\nbreak", "two lines"],
    ["quote\"and\\slash", "escapes"],
    ["para\u2029sep", "a line break"],
  ])("quotes %j (else %s)", (value) => {
    const written = yamlScalar(value);
    expect(written.startsWith('"')).toBe(true);
    expect(JSON.parse(written.replace(/\\u2029/g, "\u2029"))).toBe(value);
  });

  it("writes numbers, booleans and null as themselves", () => {
    expect(yamlScalar(6)).toBe("6");
    expect(yamlScalar(true)).toBe("true");
    expect(yamlScalar(null)).toBe("null");
    expect(() => yamlScalar(Number.NaN)).toThrow();
  });
});

describe("toYaml", () => {
  const document: { [key: string]: YamlValue } = {
    services: {
      web: {
        image: "nginx:1.27",
        ports: ["8080:80"],
        environment: { A: "1", B: "${B}", C: "it's", D: "" },
        command: ["sh", "-c", "echo \"hi\" && sleep 1"],
        healthcheck: { test: ["CMD", "true"], retries: 3 },
        init: true,
        labels: {},
        empty: [],
      },
      db: { image: "postgres:16", restart: "no" },
    },
    volumes: { data: {} },
    "x-list-of-maps": [{ name: "a", value: 1 }, { name: "b", nested: { deep: ["x"] } }, {}],
  };

  it("writes comments above the keys they belong to and a header on top", () => {
    const text = toYaml(document, {
      header: ["Generated.", "", "Second line."],
      comments: { "services.web.init": "Why init.\nSecond line.", "services.db": "The database." },
      spacedMaps: ["services"],
    });
    const lines = text.split("\n");
    expect(lines.slice(0, 4)).toEqual(["# Generated.", "#", "# Second line.", ""]);
    const init = lines.indexOf("    init: true");
    expect(lines.slice(init - 2, init)).toEqual(["    # Why init.", "    # Second line."]);
    const db = lines.indexOf("  db:");
    expect(lines.slice(db - 2, db)).toEqual(["", "  # The database."]);
  });

  it("refuses a comment for a key that is not in the document", () => {
    expect(() => toYaml({ a: 1 }, { comments: { "a.b": "x", c: "y" } })).toThrow("Template comments refer to missing keys: a.b, c");
  });

  it.skipIf(pyYamlSkip)("reads back as the same data in a YAML 1.1 reader (PyYAML)", () => {
    expect(pyYamlLoad(toYaml(document, { comments: { "services.web.init": "# not a key: value" } }))).toEqual(document);
  });
});
