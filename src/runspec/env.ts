/**
 * `-e KEY=VALUE` handling shared by `ash start` and `ash compose generate`.
 *
 * Like `docker run -e`, a bare `-e KEY` means "take KEY from my environment".
 * citty keeps only the last value of a repeated flag, so the command modules
 * read every occurrence from the raw argv with `collectRepeatedFlag`.
 */

export interface EnvAssignment {
  key: string;
  /** Undefined for a bare `-e KEY`: the value comes from the caller's environment. */
  value?: string;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function isEnvName(name: string): boolean {
  return NAME.test(name);
}

export function parseEnvAssignment(text: string): EnvAssignment {
  const eq = text.indexOf("=");
  const key = eq === -1 ? text : text.slice(0, eq);
  if (!NAME.test(key)) {
    throw new Error(`-e ${JSON.stringify(text)}: expected KEY=VALUE with KEY made of letters, digits and _ (not starting with a digit)`);
  }
  return eq === -1 ? { key } : { key, value: text.slice(eq + 1) };
}

/** Every value of a repeatable flag, in order: `-e A=1 --env B=2 --env=C=3 -eD=4 -e=E=5`. */
export function collectRepeatedFlag(rawArgs: readonly string[], short: string, long: string): string[] {
  const values: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i];
    if (arg === "--") break;
    if (arg === `-${short}` || arg === `--${long}`) {
      const next = rawArgs[i + 1];
      if (next === undefined) throw new Error(`${arg} needs a value, e.g. ${arg} KEY=VALUE`);
      values.push(next);
      i++;
    } else if (arg.startsWith(`--${long}=`)) {
      values.push(arg.slice(long.length + 3));
    } else if (arg.startsWith(`-${short}=`)) {
      values.push(arg.slice(short.length + 2));
    } else if (arg.startsWith(`-${short}`) && !arg.startsWith("--") && arg.length > short.length + 1) {
      values.push(arg.slice(short.length + 1));
    }
  }
  return values;
}

/**
 * Merges assignments into `base`, later ones winning, and resolves bare names from
 * `hostEnv` (a bare name that is not set there is left out, as `docker run` does).
 * Returns the values and the names whose values came from the host environment.
 */
export function mergeEnv(
  base: Record<string, string>,
  assignments: readonly EnvAssignment[],
  hostEnv: Record<string, string | undefined>,
): { env: Record<string, string>; fromHost: string[] } {
  const env = { ...base };
  const fromHost = new Set<string>();
  for (const { key, value } of assignments) {
    if (value !== undefined) {
      env[key] = value;
      fromHost.delete(key);
    } else if (hostEnv[key] !== undefined) {
      env[key] = hostEnv[key] as string;
      fromHost.add(key);
    }
  }
  return { env, fromHost: [...fromHost] };
}
