import { inspect } from "node:util";

type Env = Record<string, string | undefined>;

/**
 * Variables whose values are secrets. Their values, when set, are masked
 * wherever they appear in a log line or an exported error.
 */
export const SECRET_VARIABLES = [
  "ASH_API_KEY",
  "ANTHROPIC_API_KEY",
  "ANTHROPIC_AUTH_TOKEN",
  "ASH_DATABASE_URL",
  "ASH_TELEMETRY_TOKEN",
  "ASH_SNAPSHOT_STORE",
  "AWS_SECRET_ACCESS_KEY",
  "OTEL_EXPORTER_OTLP_HEADERS",
  "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
] as const;

export const MASK = "***";

/** Shorter values would mask ordinary words. */
const MIN_SECRET_LENGTH = 6;

/** Patterns that are secrets wherever they come from. */
const PATTERNS: Array<[RegExp, string]> = [
  // Authorization: Bearer <token>
  [/\b(Bearer\s+)[A-Za-z0-9._~+/=-]+/gi, `$1${MASK}`],
  // Anthropic keys
  [/\bsk-ant-[A-Za-z0-9_-]+/g, `sk-ant-${MASK}`],
  // Ash's generated API keys (ash_ + 43 base64url characters)
  [/\bash_[A-Za-z0-9_-]{32,}/g, `ash_${MASK}`],
  // Credentials in URLs: scheme://user:password@host
  [/\b([a-z][a-z0-9+.-]*:\/\/[^\s:/?#@]*:)[^\s@/?#]+@/gi, `$1${MASK}@`],
  // password=... in connection strings and query strings
  [/\b(password|passwd|pwd|secret|token|api[_-]?key)=([^\s&;,]+)/gi, `$1=${MASK}`],
];

/**
 * Builds the function that masks secrets in text: the values of the secret
 * variables set in `env` (and the parts of them that are secrets on their
 * own, such as a database URL's password or a header's value), plus patterns
 * that are secrets anywhere (bearer tokens, Anthropic keys, URL passwords).
 */
export function createRedactor(env: Env = process.env, extraSecrets: readonly string[] = []): (text: string) => string {
  const secrets = new Set<string>();
  const add = (value: string | undefined) => {
    const v = value?.trim();
    if (v && v.length >= MIN_SECRET_LENGTH) secrets.add(v);
  };
  for (const name of SECRET_VARIABLES) {
    const value = env[name];
    if (!value) continue;
    // A URL (database, bucket) is worth seeing in a log; only its password is secret.
    if (!isUrlWithHost(value)) add(value);
    for (const part of secretPartsOf(value)) add(part);
  }
  for (const value of extraSecrets) add(value);
  // Longest first, so a value that contains another is masked whole.
  const literals = [...secrets].sort((a, b) => b.length - a.length);

  return (text: string) => {
    let out = text;
    for (const secret of literals) if (out.includes(secret)) out = out.split(secret).join(MASK);
    for (const [pattern, replacement] of PATTERNS) out = out.replace(pattern, replacement);
    return out;
  };
}

function isUrlWithHost(value: string): boolean {
  try {
    return new URL(value).host !== "";
  } catch {
    return false;
  }
}

/** A URL's password, the values of `k=v,k2=v2` header lists. */
function secretPartsOf(value: string): string[] {
  const parts: string[] = [];
  try {
    const url = new URL(value);
    if (url.password) parts.push(url.password, decodeURIComponent(url.password));
  } catch {
    // not a URL
  }
  if (value.includes("=")) {
    for (const pair of value.split(",")) {
      const eq = pair.indexOf("=");
      if (eq === -1) continue;
      const v = pair.slice(eq + 1).trim();
      parts.push(v);
      const bearer = /^Bearer\s+(.+)$/i.exec(v);
      if (bearer) parts.push(bearer[1]);
      try {
        parts.push(decodeURIComponent(v));
      } catch {
        // a stray % is fine
      }
    }
  }
  return parts;
}

/**
 * Masks secrets in any value headed for a log: strings, errors (message,
 * stack, cause), arrays and plain objects, to a bounded depth.
 */
export function redactValue(value: unknown, redact: (text: string) => string, depth = 0, seen = new WeakSet<object>()): unknown {
  if (typeof value === "string") return redact(value);
  if (value === null || typeof value !== "object") return value;
  if (seen.has(value)) return "[Circular]";
  if (depth > 6) return "[…]";
  seen.add(value);
  if (value instanceof Error) {
    const copy = new Error(redact(value.message));
    copy.name = value.name;
    copy.stack = value.stack === undefined ? undefined : redact(value.stack);
    const keys = new Set(Object.keys(value));
    if ((value as any).cause !== undefined) keys.add("cause");
    for (const key of keys) (copy as any)[key] = redactValue((value as any)[key], redact, depth + 1, seen);
    return copy;
  }
  if (Array.isArray(value)) return value.map((v) => redactValue(v, redact, depth + 1, seen));
  if (value instanceof Date) return value;
  if (Buffer.isBuffer(value)) return `[Buffer ${value.length} bytes]`;
  const proto = Object.getPrototypeOf(value);
  // Class instances (a URL, a Map) have no own fields to walk: their printed form is what a log shows.
  if (proto !== Object.prototype && proto !== null) return redact(inspect(value, { depth: 3, breakLength: Infinity }));
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) out[key] = isSecretKey(key) && typeof v === "string" && v ? MASK : redactValue(v, redact, depth + 1, seen);
  return out;
}

/** Object keys whose values are secrets whatever they hold. */
function isSecretKey(key: string): boolean {
  return /^(authorization|password|passwd|secret|token|api[_-]?key|apikey|x-api-key)$/i.test(key);
}
