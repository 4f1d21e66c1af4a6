/**
 * Fills `{{name}}` placeholders in a template read from `templates/`.
 *
 * A string that is exactly one placeholder takes the value as it is (so a
 * placeholder can stand for a number, a list or a map); placeholders inside a
 * longer string are replaced by their text. A placeholder without a value is an
 * error, never an empty string, so a template and its renderer cannot drift apart
 * silently.
 */

const WHOLE = /^\{\{(\w+)\}\}$/;
const INLINE = /\{\{(\w+)\}\}/g;

export function fillTemplate<T>(template: T, vars: Record<string, unknown>): T {
  return fill(template, vars, "") as T;
}

function lookup(vars: Record<string, unknown>, name: string, path: string): unknown {
  if (!(name in vars) || vars[name] === undefined) {
    throw new Error(`Template value {{${name}}} is missing (at ${path || "top level"})`);
  }
  return vars[name];
}

function fill(value: unknown, vars: Record<string, unknown>, path: string): unknown {
  if (typeof value === "string") {
    const whole = WHOLE.exec(value);
    if (whole) return structuredClone(lookup(vars, whole[1], path));
    return value.replace(INLINE, (_, name: string) => String(lookup(vars, name, path)));
  }
  if (Array.isArray(value)) return value.map((item, index) => fill(item, vars, `${path}[${index}]`));
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      if (key === "$comment") continue;
      out[key] = fill(item, vars, path ? `${path}.${key}` : key);
    }
    return out;
  }
  return value;
}
