/**
 * A small YAML emitter for the Compose files and Kubernetes manifests Ash writes.
 *
 * It covers exactly what a Compose file needs (maps, lists, strings, numbers,
 * booleans, null, comments above keys) and quotes every string that a YAML 1.1
 * reader could take for something else: `4100:4100` is a base-60 number there,
 * `no` is a boolean, `${X}` must stay a string. Quoted strings use JSON's
 * double-quoted form, which is also valid YAML.
 */

export type YamlValue = string | number | boolean | null | YamlValue[] | { [key: string]: YamlValue };

/** Comments keyed by the dotted path of the key they precede, e.g. `services.ash.cap_add`. */
export type YamlComments = Record<string, string>;

export interface YamlOptions {
  /** Lines written at the top of the document, each prefixed with `# `. */
  header?: string[];
  comments?: YamlComments;
  /** Paths of maps whose entries are separated by a blank line (e.g. `services`). */
  spacedMaps?: string[];
  /** A blank line between top-level keys (default true; Kubernetes objects read better without). */
  spacedTop?: boolean;
}

const RESERVED = /^(?:y|n|yes|no|true|false|on|off|null|~|-|\.inf|\.nan)$/i;
// Starts with a letter, `/` or `.`, then only characters that never carry meaning in plain scalars.
const PLAIN = /^[A-Za-z/.][A-Za-z0-9_./-]*$/;

export function yamlScalar(value: string | number | boolean | null): string {
  if (value === null) return "null";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`Cannot write ${value} as YAML`);
    return String(value);
  }
  if (PLAIN.test(value) && !RESERVED.test(value)) return value;
  // JSON leaves U+0085/U+2028/U+2029 raw; YAML would read them as line breaks.
  return JSON.stringify(value).replace(/[\u0085\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function yamlKey(key: string): string {
  return /^[A-Za-z_][A-Za-z0-9_.-]*$/.test(key) && !RESERVED.test(key) ? key : JSON.stringify(key);
}

function isMap(value: YamlValue): value is { [key: string]: YamlValue } {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function commentLines(text: string | undefined, indent: string): string[] {
  if (!text) return [];
  return text.split("\n").map((line) => (line ? `${indent}# ${line}` : `${indent}#`));
}

export function toYaml(document: { [key: string]: YamlValue }, options: YamlOptions = {}): string {
  const comments = options.comments ?? {};
  const spaced = new Set(options.spacedMaps ?? []);
  const spacedTop = options.spacedTop ?? true;
  const used = new Set<string>();
  const lines: string[] = (options.header ?? []).map((line) => (line ? `# ${line}` : "#"));
  if (lines.length > 0) lines.push("");

  const comment = (path: string, indent: string) => {
    if (path in comments) used.add(path);
    return commentLines(comments[path], indent);
  };

  const writeMap = (map: { [key: string]: YamlValue }, path: string, depth: number) => {
    const indent = "  ".repeat(depth);
    const entries = Object.entries(map);
    entries.forEach(([key, value], index) => {
      const childPath = path ? `${path}.${key}` : key;
      if (index > 0 && ((depth === 0 && spacedTop) || spaced.has(path))) lines.push("");
      lines.push(...comment(childPath, indent));
      writeEntry(`${indent}${yamlKey(key)}:`, value, childPath, depth);
    });
  };

  const writeEntry = (prefix: string, value: YamlValue, path: string, depth: number) => {
    if (Array.isArray(value)) {
      if (value.length === 0) return void lines.push(`${prefix} []`);
      lines.push(prefix);
      writeList(value, path, depth + 1);
    } else if (isMap(value)) {
      if (Object.keys(value).length === 0) return void lines.push(`${prefix} {}`);
      lines.push(prefix);
      writeMap(value, path, depth + 1);
    } else {
      lines.push(`${prefix} ${yamlScalar(value)}`);
    }
  };

  const writeList = (list: YamlValue[], path: string, depth: number) => {
    const indent = "  ".repeat(depth);
    for (const item of list) {
      if (Array.isArray(item)) {
        throw new TypeError(`Nested lists are not used in Compose files (at ${path})`);
      } else if (isMap(item)) {
        // `- key: value` with the remaining keys aligned under the first one.
        const entries = Object.entries(item);
        if (entries.length === 0) {
          lines.push(`${indent}- {}`);
          continue;
        }
        const start = lines.length;
        writeMap(item, `${path}[]`, depth + 1);
        lines[start] = `${indent}- ${lines[start].slice(indent.length + 2)}`;
      } else {
        lines.push(`${indent}- ${yamlScalar(item)}`);
      }
    }
  };

  writeMap(document, "", 0);
  const unused = Object.keys(comments).filter((path) => !used.has(path));
  if (unused.length > 0) {
    // A comment for a key that is not there means the template and its notes drifted apart.
    throw new Error(`Template comments refer to missing keys: ${unused.join(", ")}`);
  }
  return lines.join("\n") + "\n";
}
