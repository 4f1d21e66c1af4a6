import { resolve } from "node:path";
import type Docker from "dockerode";
import template from "../../templates/run-spec.json" with { type: "json" };
import { version as packageVersion } from "../version";
import { type EnvAssignment, mergeEnv } from "./env";
import { fillTemplate } from "./template";

/** dockerode's HostConfig lacks `CgroupnsMode` (Engine API 1.41+). */
export interface AshHostConfig extends Docker.HostConfig {
  CgroupnsMode?: "host" | "private";
}

export interface RunSpecOptions {
  /** Image reference; defaults to `ghcr.io/ash-ai/ash:<package version>`. */
  image?: string;
  /** Host port published to the container's 4100. */
  port?: number | string;
  /** Host folder mounted at `/data` (made absolute). */
  dataDir: string;
  /** Becomes `ASH_DATABASE_URL`. */
  databaseUrl?: string;
  /** `-e` assignments in the order given; later ones win. */
  env?: readonly EnvAssignment[];
  /** Where `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL` and bare `-e NAME`s come from. */
  hostEnv?: Record<string, string | undefined>;
}

export interface RunSpec {
  name: string;
  image: string;
  labels: Record<string, string>;
  /** Every variable set in the container, values included. */
  env: Record<string, string>;
  /** Names in `env` whose values were read from the caller's environment (passed by name on a command line). */
  envFromHost: string[];
  /** Variables the server needs from the caller's environment that were not set there. */
  missingHostEnv: string[];
  ports: { host: number; container: number }[];
  binds: string[];
  dataDir: string;
  hostConfig: AshHostConfig;
  /** Why each host option is there, keyed by its `docker run` flag. */
  why: Record<string, string>;
}

export const DEFAULT_PORT = 4100;
export const CONTAINER_NAME = template.name;

/**
 * The container `ash start` manages: ASH_CONTAINER_NAME when set (a second Ash on
 * the same machine, e.g. a test run beside a user's server), else ash-server.
 */
export function containerName(env: Record<string, string | undefined> = process.env): string {
  const name = env.ASH_CONTAINER_NAME?.trim();
  if (!name) return CONTAINER_NAME;
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/.test(name)) {
    throw new Error(`ASH_CONTAINER_NAME must be a Docker container name (letters, digits, _ . -), got ${JSON.stringify(name)}`);
  }
  return name;
}
export const CONTAINER_PORT = template.containerPort;
/** The label every container `ash start` creates carries (`ai.ash.managed=true`). */
export const MANAGED_LABEL = "ai.ash.managed";

/**
 * The image `ash start` and `ash compose generate` use when `--image` is not
 * given: ASH_IMAGE when set (a mirror, a private registry), else the release
 * image matching this CLI's version.
 */
export function defaultImage(version: string = packageVersion, env: Record<string, string | undefined> = process.env): string {
  return env.ASH_IMAGE?.trim() || `ghcr.io/ash-ai/ash:${version}`;
}

export function parsePort(value: number | string | undefined, flag = "--port"): number {
  if (value === undefined || value === "") return DEFAULT_PORT;
  const text = String(value).trim();
  const port = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`${flag} must be a port number from 1 to 65535, got ${JSON.stringify(String(value))}`);
  }
  return port;
}

export function checkImageName(image: string, flag = "--image"): string {
  const trimmed = image.trim();
  if (!trimmed || /\s/.test(trimmed) || trimmed.startsWith("-")) {
    throw new Error(`${flag} must be an image reference like ghcr.io/ash-ai/ash:0.1.0, got ${JSON.stringify(image)}`);
  }
  return trimmed;
}

/**
 * The isolation options the sandboxes need instead of `--privileged`, as they are
 * in the template: used by `ash start` and by the Testcontainers module alike.
 */
export function isolationOptions(): { hostConfig: AshHostConfig; binds: string[] } {
  return {
    hostConfig: structuredClone(template.hostConfig) as AshHostConfig,
    binds: template.binds.filter((bind) => !bind.includes("{{")),
  };
}

/** Renders `templates/run-spec.json` into the container `ash start` creates. */
export function renderRunSpec(options: RunSpecOptions): RunSpec {
  const hostEnv = options.hostEnv ?? process.env;
  const image = checkImageName(options.image ?? defaultImage());
  const port = parsePort(options.port);
  if (!options.dataDir) throw new Error("A data folder is required");
  const dataDir = resolve(options.dataDir);
  if (dataDir.includes(":")) {
    throw new Error(`--data-dir cannot contain ":" (Docker bind syntax), got ${JSON.stringify(dataDir)}`);
  }

  const filled = fillTemplate(template, { image, port, dataDir, version: packageVersion });

  // Host variables first (passed by name), then --database-url, then -e in order: later wins.
  const assignments: EnvAssignment[] = [...filled.envFromHost.always, ...filled.envFromHost.whenSet].map((key) => ({ key }));
  if (options.databaseUrl !== undefined) {
    if (!options.databaseUrl.trim()) throw new Error("--database-url is empty");
    const clash = options.env?.find((a) => a.key === "ASH_DATABASE_URL" && a.value !== options.databaseUrl);
    if (clash) throw new Error("--database-url and -e ASH_DATABASE_URL disagree; give the URL once");
    assignments.push({ key: "ASH_DATABASE_URL", value: options.databaseUrl });
  }
  assignments.push(...(options.env ?? []));
  const { env, fromHost } = mergeEnv({}, assignments, hostEnv);
  for (const name of fromHost) {
    // An empty ANTHROPIC_BASE_URL would point the model client nowhere; unset beats empty.
    if (env[name] === "") delete env[name];
  }

  return {
    name: containerName(hostEnv),
    image,
    labels: filled.labels,
    env,
    envFromHost: fromHost.filter((name) => name in env),
    missingHostEnv: filled.envFromHost.always.filter((name) => !env[name]),
    ports: [{ host: Number(filled.hostPort), container: filled.containerPort }],
    binds: filled.binds,
    dataDir,
    hostConfig: filled.hostConfig as AshHostConfig,
    why: filled["x-why"],
  };
}

/** Options for `docker.createContainer(...)`. */
export function toCreateOptions(spec: RunSpec): Docker.ContainerCreateOptions & { HostConfig: AshHostConfig } {
  const exposed: Record<string, {}> = {};
  const bindings: Record<string, { HostPort: string }[]> = {};
  for (const { host, container } of spec.ports) {
    exposed[`${container}/tcp`] = {};
    bindings[`${container}/tcp`] = [{ HostPort: String(host) }];
  }
  return {
    name: spec.name,
    Image: spec.image,
    Env: Object.entries(spec.env).map(([key, value]) => `${key}=${value}`),
    Labels: { ...spec.labels },
    ExposedPorts: exposed,
    HostConfig: {
      ...structuredClone(spec.hostConfig),
      Binds: [...spec.binds],
      PortBindings: bindings,
    },
  };
}

/**
 * The `docker run` options equivalent to `toCreateOptions` + start, one group per
 * option. Variables read from the caller's environment are passed by name
 * (`-e NAME`), so the line carries no secret and still works in the same shell.
 */
function dockerRunGroups(spec: RunSpec): string[][] {
  const groups: string[][] = [["docker", "run"], ["--detach"], ["--name", spec.name]];
  for (const [key, value] of Object.entries(spec.hostConfig)) {
    switch (key) {
      case "Init":
        if (value) groups.push(["--init"]);
        break;
      case "CgroupnsMode":
        groups.push([`--cgroupns=${value}`]);
        break;
      case "CapAdd":
        for (const cap of value as string[]) groups.push(["--cap-add", cap]);
        break;
      case "SecurityOpt":
        for (const opt of value as string[]) groups.push(["--security-opt", opt]);
        break;
      case "RestartPolicy":
        groups.push(["--restart", (value as { Name: string }).Name]);
        break;
      default:
        // A host option added to the template needs its flag here too.
        throw new Error(`No docker run flag known for HostConfig.${key}`);
    }
  }
  for (const bind of spec.binds) groups.push(["-v", bind]);
  for (const { host, container } of spec.ports) groups.push(["-p", `${host}:${container}`]);
  for (const [key, value] of Object.entries(spec.env)) {
    groups.push(["-e", spec.envFromHost.includes(key) ? key : `${key}=${value}`]);
  }
  for (const [key, value] of Object.entries(spec.labels)) groups.push(["--label", `${key}=${value}`]);
  groups.push([spec.image]);
  return groups;
}

export function toDockerRunArgs(spec: RunSpec): string[] {
  return dockerRunGroups(spec).flat();
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** The `docker run` line as a copy-pasteable shell command, one option per line. */
export function formatDockerRun(spec: RunSpec): string {
  return dockerRunGroups(spec)
    .map((group) => group.map(shellQuote).join(" "))
    .join(" \\\n  ");
}

/** The spec as shown by `--dry-run`: values from the caller's environment are not printed. */
export function printableSpec(spec: RunSpec): Omit<RunSpec, "why"> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(spec.env)) {
    env[key] = spec.envFromHost.includes(key) ? `<from your environment: $${key}>` : value;
  }
  const { why: _why, ...rest } = spec;
  return { ...rest, env };
}
