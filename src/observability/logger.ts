import { formatWithOptions, inspect } from "node:util";
import { consola, type ConsolaInstance, type ConsolaReporter, type LogObject } from "consola";
import { createRedactor, redactValue } from "./redact";

type Env = Record<string, string | undefined>;

export interface LoggingConfig {
  logFormat: "human" | "json";
}

export interface LoggingOptions {
  /** The consola instance to set up; the global one by default. */
  instance?: ConsolaInstance;
  /** Where secret values are read from (process.env by default). */
  env?: Env;
  /** More literal secrets to mask (e.g. a key generated at start-up). */
  secrets?: readonly string[];
  /** Where JSON lines go (stdout by default). */
  write?: (line: string) => void;
}

/** Each reporter's own `log`, kept so configuring again starts from it (and never wraps twice). */
const originals = new WeakMap<ConsolaReporter, ConsolaReporter["log"]>();

/**
 * Sets up logging for the server: ASH_LOG_FORMAT=json writes one JSON object
 * per line (`{time, level, tag, msg, ...fields}`), human keeps consola's own
 * output. Either way every argument is passed through the redactor first, so
 * secrets (API keys, tokens, database passwords) never reach a log line.
 *
 * Loggers made with `withTag` copy their parent's list of reporters, so the
 * reporters themselves are changed in place: loggers tagged before this call
 * (module-level ones) follow it too.
 */
export function configureLogging(config: LoggingConfig, options: LoggingOptions = {}): ConsolaInstance {
  const instance = options.instance ?? consola;
  const redact = createRedactor(options.env ?? process.env, options.secrets ?? []);
  const write = options.write ?? ((line: string) => void process.stdout.write(line));
  instance.options.reporters.forEach((reporter, index) => {
    if (!originals.has(reporter)) originals.set(reporter, reporter.log.bind(reporter));
    const original = originals.get(reporter)!;
    if (config.logFormat === "json") {
      // One line per entry, however many reporters there are.
      reporter.log = index === 0 ? (entry) => write(JSON.stringify(jsonRecord(entry, redact)) + "\n") : () => undefined;
    } else {
      reporter.log = (entry, ctx) => original({ ...entry, args: entry.args.map((arg) => redactValue(arg, redact)) }, ctx);
    }
  });
  return instance;
}

const RESERVED = new Set(["time", "level", "tag", "msg"]);

/**
 * `{time, level, tag, msg}` plus: the fields of a plain object argument,
 * and `error: {name, message, stack}` for the first Error argument.
 */
function jsonRecord(entry: LogObject, redact: (text: string) => string): Record<string, unknown> {
  const text: string[] = [];
  const fields: Record<string, unknown> = {};
  let error: Error | undefined;
  for (const arg of entry.args ?? []) {
    const value = redactValue(arg, redact);
    if (value instanceof Error) {
      text.push(value.message);
      error ??= value;
    } else if (isPlainObject(value)) {
      for (const [key, v] of Object.entries(value)) fields[RESERVED.has(key) ? `field_${key}` : key] = v;
    } else if (typeof value === "string") {
      text.push(value);
    } else {
      text.push(typeof value === "object" ? inspect(value, { depth: 4, breakLength: Infinity }) : formatWithOptions({ colors: false }, "%s", value));
    }
  }
  return {
    time: (entry.date ?? new Date()).toISOString(),
    level: entry.type,
    tag: entry.tag || undefined,
    msg: text.join(" "),
    ...fields,
    ...(error ? { error: { name: error.name, message: error.message, stack: error.stack } } : {}),
  };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}
