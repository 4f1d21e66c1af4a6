import template from "../../templates/compose.json" with { type: "json" };
import { version as packageVersion } from "../version";
import type { EnvAssignment } from "./env";
import { checkImageName, defaultImage, parsePort } from "./run-spec";
import { fillTemplate } from "./template";
import { toYaml, type YamlValue } from "./yaml";

export const DATABASES = ["cockroach", "postgres"] as const;
export type ComposeDatabase = (typeof DATABASES)[number];

export const DEFAULT_MAX_SANDBOXES = 200;
export const DEFAULT_IDLE_TIMEOUT_MS = 1_800_000;

export interface ComposeOptions {
  database?: ComposeDatabase | string;
  image?: string;
  port?: number | string;
  maxSandboxes?: number | string;
  idleTimeoutMs?: number | string;
  /** Extra variables for the ash service; a bare name becomes `${NAME}` (read from .env or the shell). */
  env?: readonly EnvAssignment[];
}

export function parseDatabase(value: string | undefined): ComposeDatabase {
  const database = value ?? "cockroach";
  if (!(DATABASES as readonly string[]).includes(database)) {
    throw new Error(`--database must be one of ${DATABASES.join(", ")}, got ${JSON.stringify(database)}`);
  }
  return database as ComposeDatabase;
}

export function positiveInteger(value: number | string | undefined, fallback: number, flag: string): number {
  if (value === undefined || value === "") return fallback;
  const text = String(value).trim();
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < 1) {
    throw new Error(`${flag} must be a whole number greater than 0, got ${JSON.stringify(String(value))}`);
  }
  return n;
}

/** Variables `ash compose generate` must find in `.env` for this database (generated when absent). */
export function composeSecretNames(database: ComposeDatabase): string[] {
  return ["ASH_API_KEY", ...template.databases[database].secrets];
}

/** `$` starts interpolation in Compose files; a literal value keeps its dollars as `$$`. */
function composeLiteral(value: string): string {
  return value.replace(/\$/g, "$$$$");
}

export interface ComposeDocument {
  /** The Compose file as data: `services` and `volumes`. */
  document: { [key: string]: YamlValue };
  header: string[];
  comments: Record<string, string>;
}

/** Renders `templates/compose.json` into a Compose file (YAML text). */
export function renderCompose(options: ComposeOptions = {}): string {
  const { document, header, comments } = buildCompose(options);
  return toYaml(document, { header, comments, spacedMaps: ["services"] });
}

/** The Compose file as data, before it is written as YAML. */
export function buildCompose(options: ComposeOptions = {}): ComposeDocument {
  const database = parseDatabase(options.database);
  const image = checkImageName(options.image ?? defaultImage());
  const port = parsePort(options.port);
  const maxSandboxes = positiveInteger(options.maxSandboxes, DEFAULT_MAX_SANDBOXES, "--max-sandboxes");
  const idleTimeoutMs = positiveInteger(options.idleTimeoutMs, DEFAULT_IDLE_TIMEOUT_MS, "--idle-timeout");
  const section = template.databases[database];
  const secretNames = composeSecretNames(database);

  const flagged: Record<string, { flag: string; value: string | undefined }> = {
    ASH_MAX_SANDBOXES: { flag: "--max-sandboxes", value: options.maxSandboxes === undefined ? undefined : String(maxSandboxes) },
    ASH_IDLE_TIMEOUT_MS: { flag: "--idle-timeout", value: options.idleTimeoutMs === undefined ? undefined : String(idleTimeoutMs) },
  };
  for (const { key, value } of options.env ?? []) {
    const flag = flagged[key];
    if (flag?.value !== undefined && value !== flag.value) {
      throw new Error(`${flag.flag} and -e ${key} disagree; give the value once`);
    }
  }

  const filled = fillTemplate(
    { header: template.header, services: template.services, volumes: template.volumes },
    {
      image,
      port,
      version: packageVersion,
      databaseTitle: section.title,
      secretNames: secretNames.join(" and "),
      databaseUrl: section.databaseUrl,
      maxSandboxes: String(maxSandboxes),
      idleTimeoutMs: String(idleTimeoutMs),
      dependsOn: section.dependsOn,
    },
  );

  const environment = filled.services.ash.environment as Record<string, string>;
  for (const { key, value } of options.env ?? []) {
    environment[key] = value === undefined ? `\${${key}}` : composeLiteral(value);
  }

  const document = {
    services: { ...filled.services, ...section.services },
    volumes: { ...filled.volumes, ...section.volumes },
  } as unknown as { [key: string]: YamlValue };

  return { document, header: filled.header, comments: { ...template.comments, ...section.comments } };
}
