import { PassThrough } from "node:stream";
import { createConsola } from "consola";
import { describe, expect, it } from "vitest";
import { configureLogging } from "../../src/observability/logger";
import { createRedactor } from "../../src/observability/redact";

const ENV = {
  ASH_API_KEY: "ash-env-key-4f8a9c2b7d",
  ANTHROPIC_API_KEY: "sk-ant-api03-Zx9yQw8vUt7s",
  ASH_DATABASE_URL: "postgres://ash:db-pass-Qm3n@db.internal:5432/ash",
  ASH_TELEMETRY_TOKEN: "telemetry-token-77aa",
  OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=otlp-header-secret-55",
};
const SECRETS = ["ash-env-key-4f8a9c2b7d", "Zx9yQw8vUt7s", "db-pass-Qm3n", "telemetry-token-77aa", "otlp-header-secret-55"];

/** Logs the same secret-laden lines any server path might log. */
function logEverything(log: ReturnType<typeof createConsola>) {
  const tagged = log.withTag("ash");
  tagged.info(`starting with key ${ENV.ASH_API_KEY}`);
  tagged.info("database:", ENV.ASH_DATABASE_URL);
  tagged.warn("model call failed", { status: 401, headers: { authorization: `Bearer ${ENV.ANTHROPIC_API_KEY}` }, apiKey: ENV.ANTHROPIC_API_KEY });
  const error = new Error(`connect ECONNREFUSED for ${ENV.ASH_DATABASE_URL}`);
  (error as any).cause = new Error(`token ${ENV.ASH_TELEMETRY_TOKEN} rejected`);
  tagged.error("request failed:", error);
  tagged.info("exporter headers", ENV.OTEL_EXPORTER_OTLP_HEADERS);
  tagged.info("a header seen on the wire: Authorization: Bearer abc.def-ghi_jkl");
  tagged.info("a key not in the environment: sk-ant-api03-OTHERKEY0123 and a URL redis://u:hunter2x@cache:6379");
  tagged.info(`generated key ash_${"A".repeat(43)}`);
}

describe("log redaction", () => {
  it("JSON lines: one object per line with time, level, tag, msg and fields; no secret anywhere", () => {
    const lines: string[] = [];
    const log = createConsola({ level: 5 });
    configureLogging({ logFormat: "json" }, { instance: log, env: ENV, write: (line) => lines.push(line) });
    logEverything(log);

    const output = lines.join("");
    for (const secret of SECRETS) expect(output).not.toContain(secret);
    expect(output).not.toContain("hunter2x");
    expect(output).not.toContain("OTHERKEY0123");
    expect(output).not.toContain("abc.def-ghi_jkl");
    expect(output).not.toContain("A".repeat(43));

    expect(lines.every((l) => l.endsWith("\n") && !l.slice(0, -1).includes("\n"))).toBe(true);
    const records = lines.map((l) => JSON.parse(l));
    expect(records).toHaveLength(8);
    for (const r of records) {
      expect(new Date(r.time).toISOString()).toBe(r.time);
      expect(r.tag).toBe("ash");
      expect(typeof r.msg).toBe("string");
    }
    expect(records[0]).toMatchObject({ level: "info", msg: "starting with key ***" });
    expect(records[1].msg).toBe("database: postgres://ash:***@db.internal:5432/ash");
    expect(records[2]).toMatchObject({ level: "warn", msg: "model call failed", status: 401, headers: { authorization: "***" }, apiKey: "***" });
    expect(records[3].level).toBe("error");
    expect(records[3].msg).toBe("request failed: connect ECONNREFUSED for postgres://ash:***@db.internal:5432/ash");
    expect(records[3].error).toMatchObject({ name: "Error", message: "connect ECONNREFUSED for postgres://ash:***@db.internal:5432/ash" });
    expect(records[3].error.stack).toContain("connect ECONNREFUSED");
    expect(records[6].msg).toBe("a key not in the environment: sk-ant-*** and a URL redis://u:***@cache:6379");
  });

  it("human output: consola's own format, same masking, errors keep their stack", () => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let text = "";
    stdout.on("data", (d) => (text += d));
    stderr.on("data", (d) => (text += d));
    const log = createConsola({ level: 5, stdout: stdout as any, stderr: stderr as any });
    configureLogging({ logFormat: "human" }, { instance: log, env: ENV });
    logEverything(log);

    for (const secret of SECRETS) expect(text).not.toContain(secret);
    expect(text).not.toContain("hunter2x");
    expect(text).toContain("starting with key ***");
    expect(text).toContain("postgres://ash:***@db.internal:5432/ash");
    expect(text).toMatch(/at .*observability-logger\.test\.ts/);
  });

  it("loggers tagged before configuring (module-level ones) follow the format and the masking too", () => {
    const lines: string[] = [];
    const log = createConsola({ level: 5, reporters: [{ log: () => lines.push("unconfigured output") }] });
    const early = log.withTag("db");
    configureLogging({ logFormat: "json" }, { instance: log, env: ENV, write: (line) => lines.push(line) });
    early.info(`connected with ${ENV.ASH_DATABASE_URL}`);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0])).toMatchObject({ tag: "db", msg: "connected with postgres://ash:***@db.internal:5432/ash" });
  });

  it("configuring twice does not wrap twice, and switching format works", () => {
    const lines: string[] = [];
    const seen: unknown[][] = [];
    const log = createConsola({ level: 5, reporters: [{ log: (entry) => seen.push(entry.args) }] });
    configureLogging({ logFormat: "human" }, { instance: log, env: ENV });
    configureLogging({ logFormat: "human" }, { instance: log, env: ENV });
    log.info(ENV.ASH_API_KEY);
    expect(seen).toEqual([["***"]]);
    configureLogging({ logFormat: "json" }, { instance: log, env: ENV, write: (l) => lines.push(l) });
    log.info("now json");
    expect(seen).toHaveLength(1);
    expect(JSON.parse(lines[0]).msg).toBe("now json");
  });

  it("masks literal secrets longest first, and leaves short or unset values alone", () => {
    const redact = createRedactor({ ASH_API_KEY: "abcdefgh", ASH_TELEMETRY_TOKEN: "abcdefgh-longer", ANTHROPIC_API_KEY: "x", ASH_DATABASE_URL: "" });
    expect(redact("abcdefgh-longer and abcdefgh")).toBe("*** and ***");
    expect(redact("x marks the spot")).toBe("x marks the spot");
    expect(redact("plain text with password=swordfish&user=me")).toBe("plain text with password=***&user=me");
  });
});
