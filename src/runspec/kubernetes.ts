import { chmod, readFile, writeFile } from "node:fs/promises";
import template from "../../templates/kubernetes.json" with { type: "json" };
import composeTemplate from "../../templates/compose.json" with { type: "json" };
import runSpecTemplate from "../../templates/run-spec.json" with { type: "json" };
import { S3_STORE_URL, SHUTDOWN_LIMIT_MS } from "../config";
import { isHttpUrl } from "../env-values";
import { version as packageVersion } from "../version";
import { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_SANDBOXES, positiveInteger } from "./compose";
import { generateSecret } from "./dotenv";
import type { EnvAssignment } from "./env";
import { checkImageName, defaultImage } from "./run-spec";
import { fillTemplate } from "./template";
import { toYaml, type YamlValue } from "./yaml";

/** `--database`: a single-node database in the cluster, for trying Ash out. */
export const KUBE_DATABASES = ["cockroach", "postgres"] as const;
export type KubeDatabase = (typeof KUBE_DATABASES)[number];

/** The Secret's file, written beside the manifests: JSON, so a rerun can read it back and keep its keys. */
export const KUBE_SECRET_FILE = "ash-secret.json";
export const KUBE_DEFAULTS = {
  namespace: "ash",
  replicas: 1,
  cpu: "1",
  memory: "4Gi",
  dataSize: "20Gi",
  databaseSize: "10Gi",
} as const;
/** Seconds the pod keeps serving after it is taken out of the Service, before SIGTERM. */
export const PRESTOP_SECONDS = 10;
/** Seconds of grace beyond the server's own shutdown limit. */
export const GRACE_MARGIN_SECONDS = 5;

export interface KubeOptions {
  namespace?: string;
  replicas?: number | string;
  image?: string;
  /** A single-node database in the cluster; exclusive with `databaseUrl`. */
  database?: KubeDatabase | string;
  /** An external PostgreSQL or CockroachDB; written to the Secret. */
  databaseUrl?: string;
  /** `s3://<bucket>[/<prefix>]`: workspaces in a bucket (needed for more than one replica). */
  snapshotStore?: string;
  s3Endpoint?: string;
  s3Region?: string;
  maxSandboxes?: number | string;
  idleTimeoutMs?: number | string;
  cpu?: string;
  memory?: string;
  dataSize?: string;
  databaseSize?: string;
  /** Extra variables: literal values go to the ConfigMap, a bare name is read from the caller's environment into the Secret. */
  env?: readonly EnvAssignment[];
}

/** What the Secret must hold; the values themselves are filled in by `prepareKubeSecret`. */
export interface KubeSecretPlan {
  namespace: string;
  /** Random values, made once and then kept. */
  generate: string[];
  /** Values given by flags now (written each time). */
  given: Record<string, string>;
  /** Taken from the caller's environment when the file does not have them yet. */
  fromEnvironment: { name: string; required: boolean; why: string }[];
}

export type KubeObject = { [key: string]: YamlValue };

export interface KubeManifests {
  /** Every object of the manifest file, in apply order. */
  objects: KubeObject[];
  /** YAML comments per object (same order), keyed by dotted path. */
  comments: Record<string, string>[];
  header: string[];
  secret: KubeSecretPlan;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const CPU = /^(?:\d+(?:\.\d{1,3})?|\d+m)$/;
const BYTES = /^\d+(?:\.\d+)?(?:Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/;

function quantity(value: string | undefined, fallback: string, flag: string, pattern: RegExp, example: string): string {
  if (value === undefined || value === "") return fallback;
  const text = value.trim();
  if (!pattern.test(text) || Number.parseFloat(text) <= 0) {
    throw new Error(`${flag} must be a Kubernetes quantity like ${example}, got ${JSON.stringify(value)}`);
  }
  return text;
}

export function parseKubeDatabase(database: string | undefined, databaseUrl: string | undefined): KubeDatabase | "external" {
  if (database !== undefined && database !== "" && databaseUrl !== undefined && databaseUrl !== "") {
    throw new Error("Give either --database (a single-node database to try Ash out) or --database-url (your own), not both");
  }
  if (databaseUrl !== undefined && databaseUrl !== "") {
    let url: URL | undefined;
    try {
      url = new URL(databaseUrl.trim());
    } catch {
      url = undefined;
    }
    if (!url || !/^postgres(ql)?:$/i.test(url.protocol) || !url.hostname) {
      throw new Error("--database-url must be a postgresql:// URL with a host (PostgreSQL or CockroachDB), e.g. postgresql://ash:PASSWORD@db.internal:5432/ash");
    }
    return "external";
  }
  if (database === undefined || database === "") {
    throw new Error("Say which database: --database-url postgresql://... for your PostgreSQL or CockroachDB, or --database cockroach|postgres for a single-node one to try Ash out");
  }
  if (!(KUBE_DATABASES as readonly string[]).includes(database)) {
    throw new Error(`--database must be one of ${KUBE_DATABASES.join(", ")}, got ${JSON.stringify(database)} (for your own database use --database-url)`);
  }
  return database as KubeDatabase;
}

/** Renders `templates/kubernetes.json` into one multi-document YAML file (the Secret is separate). */
export function renderKubernetes(options: KubeOptions = {}): string {
  const { objects, comments, header } = buildKubernetes(options);
  return objects.map((object, i) => toYaml(object, { header: i === 0 ? header : [], comments: comments[i], spacedTop: false })).join("---\n");
}

/** The manifests as data, before they are written as YAML. */
export function buildKubernetes(options: KubeOptions = {}): KubeManifests {
  const database = parseKubeDatabase(options.database, options.databaseUrl);
  const namespace = (options.namespace ?? KUBE_DEFAULTS.namespace).trim();
  if (!DNS_LABEL.test(namespace)) {
    throw new Error(`--namespace must be a Kubernetes name (lower-case letters, digits and -, at most 63), got ${JSON.stringify(options.namespace)}`);
  }
  const replicas = positiveInteger(options.replicas, KUBE_DEFAULTS.replicas, "--replicas");
  if (replicas > 1000) throw new Error(`--replicas must be at most 1000, got ${replicas}`);
  const image = checkImageName(options.image ?? defaultImage());
  const maxSandboxes = positiveInteger(options.maxSandboxes, DEFAULT_MAX_SANDBOXES, "--max-sandboxes");
  const idleTimeoutMs = positiveInteger(options.idleTimeoutMs, DEFAULT_IDLE_TIMEOUT_MS, "--idle-timeout");
  const cpu = quantity(options.cpu, KUBE_DEFAULTS.cpu, "--cpu", CPU, "2 or 500m");
  const memory = quantity(options.memory, KUBE_DEFAULTS.memory, "--memory", BYTES, "8Gi");
  const dataSize = quantity(options.dataSize, KUBE_DEFAULTS.dataSize, "--data-size", BYTES, "50Gi");
  const databaseSize = quantity(options.databaseSize, KUBE_DEFAULTS.databaseSize, "--database-size", BYTES, "20Gi");

  const store = options.snapshotStore?.trim() || undefined;
  if (store !== undefined && !S3_STORE_URL.test(store)) {
    throw new Error(`--snapshot-store must be s3://<bucket>[/<prefix>], got ${JSON.stringify(options.snapshotStore)}`);
  }
  if (!store && (options.s3Endpoint || options.s3Region)) throw new Error("--s3-endpoint and --s3-region need --snapshot-store s3://<bucket>");
  if (options.s3Endpoint && !isHttpUrl(options.s3Endpoint.trim())) {
    throw new Error(`--s3-endpoint must be an http:// or https:// URL, got ${JSON.stringify(options.s3Endpoint)}`);
  }
  if (options.s3Region && !/^[a-z0-9][a-z0-9-]{0,62}$/.test(options.s3Region.trim())) {
    throw new Error(`--s3-region must be a region name like eu-west-1, got ${JSON.stringify(options.s3Region)}`);
  }
  if (replicas > 1 && !store) {
    throw new Error(
      "--replicas above 1 needs --snapshot-store s3://<bucket>: with workspaces on a volume, a session saved by one server cannot be opened by another",
    );
  }
  if (database === "external" && options.databaseSize) throw new Error("--database-size is for --database cockroach|postgres");
  if (store && options.dataSize) throw new Error("--data-size is for workspaces on a volume; with --snapshot-store the data folder is scratch space");

  const storage = template.storage[store ? "s3" : "fs"];
  const section = template.databases[database];

  const config: Record<string, string> = {
    ASH_MAX_SANDBOXES: String(maxSandboxes),
    ASH_IDLE_TIMEOUT_MS: String(idleTimeoutMs),
  };
  if (store) config.ASH_SNAPSHOT_STORE = store;
  if (options.s3Endpoint) config.ASH_S3_ENDPOINT = options.s3Endpoint.trim();
  if (options.s3Region) config.ASH_S3_REGION = options.s3Region.trim();

  const secret: KubeSecretPlan = {
    namespace,
    // ASH_CLUSTER_SECRET even for one replica: `kubectl scale` adds servers without a rerun.
    generate: ["ASH_API_KEY", "ASH_CREDENTIAL_KEY", "ASH_CLUSTER_SECRET", ...section.secrets],
    given: database === "external" ? { ASH_DATABASE_URL: options.databaseUrl!.trim() } : {},
    fromEnvironment: [{ name: "ANTHROPIC_API_KEY", required: false, why: "the model key" }],
  };
  if (store) {
    for (const name of ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]) secret.fromEnvironment.push({ name, required: true, why: "the bucket's credentials" });
  }

  // Names the flags or the Secret own: an -e may repeat a flag's value, never contradict it or bypass the Secret.
  const flagged: Record<string, { flag: string; value: string | undefined }> = {
    ASH_MAX_SANDBOXES: { flag: "--max-sandboxes", value: options.maxSandboxes === undefined ? undefined : String(maxSandboxes) },
    ASH_IDLE_TIMEOUT_MS: { flag: "--idle-timeout", value: options.idleTimeoutMs === undefined ? undefined : String(idleTimeoutMs) },
    ASH_SNAPSHOT_STORE: { flag: "--snapshot-store", value: store },
    ASH_S3_ENDPOINT: { flag: "--s3-endpoint", value: config.ASH_S3_ENDPOINT },
    ASH_S3_REGION: { flag: "--s3-region", value: config.ASH_S3_REGION },
  };
  // Set per pod by the Deployment's env, which would silently win over the ConfigMap.
  const podNames: Record<string, string> = { POD_IP: "each pod's IP", ASH_ADVERTISE_URL: "each pod's IP and the server port" };
  const secretNames = new Set([...secret.generate, ...Object.keys(secret.given), ...secret.fromEnvironment.map((e) => e.name), "ASH_DATABASE_URL", "ASH_CREDENTIAL_KEY_PREVIOUS"]);
  for (const { key, value } of options.env ?? []) {
    if (value === undefined) {
      if (!secret.fromEnvironment.some((e) => e.name === key)) secret.fromEnvironment.push({ name: key, required: true, why: `-e ${key}` });
      continue;
    }
    if (podNames[key]) throw new Error(`-e ${key}: the Deployment sets it for every pod from ${podNames[key]}`);
    if (secretNames.has(key)) {
      throw new Error(`-e ${key}=... would put a secret in the ConfigMap; ${key === "ASH_DATABASE_URL" ? "use --database-url" : `use a bare -e ${key} (read from your environment into the Secret)`}`);
    }
    const flag = flagged[key];
    if (flag?.value !== undefined && value !== flag.value) throw new Error(`${flag.flag} and -e ${key} disagree; give the value once`);
    if (key === "ASH_SNAPSHOT_STORE" && !store) throw new Error("-e ASH_SNAPSHOT_STORE: use --snapshot-store, so the manifests fit the store");
    config[key] = value;
  }

  // The port other servers forward to is the container's own, as the template states it.
  const serverPort = template.objects.deployment.spec.template.spec.containers[0].ports[0].containerPort;
  const shutdownSeconds = Math.ceil(SHUTDOWN_LIMIT_MS / 1000);
  const labels = fillTemplate(template.labels, { version: packageVersion });
  const vars = {
    namespace,
    version: packageVersion,
    image,
    replicas,
    cpu,
    memory,
    dataSize,
    databaseSize,
    configData: config,
    // POD_IP first: Kubernetes expands $(POD_IP) only from variables listed before.
    serverEnv: [...fillTemplate(template.serverEnv, { serverPort }), ...section.serverEnv],
    capabilities: runSpecTemplate.hostConfig.CapAdd,
    strategy: storage.strategy,
    strategyComment: storage.strategyComment,
    volumes: storage.volumes,
    dataVolumeComment: storage.dataVolumeComment,
    preStopSeconds: String(PRESTOP_SECONDS),
    shutdownSeconds,
    graceMarginSeconds: GRACE_MARGIN_SECONDS,
    terminationGraceSeconds: PRESTOP_SECONDS + shutdownSeconds + GRACE_MARGIN_SECONDS,
    databaseTitle: section.title,
    storageTitle: storage.title,
    secretFile: KUBE_SECRET_FILE,
    secretNames: [...secret.generate, ...Object.keys(secret.given), ...secret.fromEnvironment.filter((e) => e.required).map((e) => e.name)].join(", "),
    // The images and the init statement are the Compose file's: one database setup to maintain.
    cockroachImage: composeTemplate.databases.cockroach.services.cockroach.image,
    postgresImage: composeTemplate.databases.postgres.services.postgres.image,
    cockroachInitSql: composeTemplate.databases.cockroach.services["cockroach-init"].command.find((arg) => arg.startsWith("--execute="))!.slice("--execute=".length),
  };

  const { namespace: ns, ...serverObjects } = template.objects;
  const named: Record<string, unknown> = { namespace: ns, ...storage.objects, ...serverObjects, ...section.objects };
  const allComments: Record<string, Record<string, string>> = { ...template.comments, ...section.comments };
  const objects: KubeObject[] = [];
  const comments: Record<string, string>[] = [];
  for (const [key, raw] of Object.entries(named)) {
    const object = fillTemplate(raw, vars) as KubeObject;
    const metadata = object.metadata as { labels?: Record<string, string> };
    metadata.labels = { ...labels, ...metadata.labels };
    objects.push(object);
    comments.push(fillTemplate(allComments[key] ?? {}, vars) as Record<string, string>);
  }
  return { objects, comments, header: fillTemplate(template.header, vars), secret };
}

export interface KubeSecretResult {
  /** The Secret to write (stringData; a `data` map already in the file is kept). */
  secret: KubeObject;
  createdFile: boolean;
  /** Names given a random value now, with those values (to show the API key once). */
  generated: Record<string, string>;
  /** Names copied from the caller's environment now. */
  fromEnvironment: string[];
  /** Names given by flags whose stored value changed. */
  replaced: string[];
  /** Names that already had a value and were left as they were. */
  kept: string[];
  /** Optional names still without a value (e.g. ANTHROPIC_API_KEY). */
  absent: string[];
}

/**
 * Reads the Secret file beside the manifests (if any) and works out its new
 * content: existing values are kept and never printed, missing ones are
 * generated or taken from `hostEnv`, values from flags are written. Throws,
 * writing nothing, when the file is not a Secret or a required value is missing.
 */
export async function prepareKubeSecret(path: string, plan: KubeSecretPlan, hostEnv: Record<string, string | undefined> = process.env): Promise<KubeSecretResult> {
  let text: string | undefined;
  try {
    text = await readFile(path, "utf8");
  } catch (error: any) {
    if (error?.code !== "ENOENT") throw error;
  }
  let existing: { stringData?: Record<string, string>; data?: Record<string, string> } = {};
  if (text !== undefined) {
    let parsed: any;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const strings = (value: unknown) => value === undefined || (value !== null && typeof value === "object" && !Array.isArray(value) && Object.values(value).every((v) => typeof v === "string"));
    if (!parsed || parsed.kind !== "Secret" || !strings(parsed.stringData) || !strings(parsed.data)) {
      throw new Error(`${path} is not the JSON Secret this command writes (kind Secret, stringData of strings); fix it or move it away. Nothing was written.`);
    }
    existing = parsed;
  }

  const values: Record<string, string> = { ...existing.stringData };
  const has = (name: string) => Boolean(values[name]) || Boolean(existing.data?.[name]);
  const result: Omit<KubeSecretResult, "secret"> = { createdFile: text === undefined, generated: {}, fromEnvironment: [], replaced: [], kept: [], absent: [] };
  for (const name of plan.generate) {
    if (has(name)) result.kept.push(name);
    else values[name] = result.generated[name] = generateSecret();
  }
  for (const [name, value] of Object.entries(plan.given)) {
    if (has(name) && values[name] !== value) result.replaced.push(name);
    values[name] = value;
    if (existing.data?.[name] !== undefined) delete existing.data[name];
  }
  const missing: string[] = [];
  for (const { name, required, why } of plan.fromEnvironment) {
    if (has(name)) result.kept.push(name);
    else if (hostEnv[name]) {
      values[name] = hostEnv[name]!;
      result.fromEnvironment.push(name);
    } else if (required) missing.push(`${name} (${why})`);
    else result.absent.push(name);
  }
  if (missing.length > 0) {
    const [them, value] = missing.length > 1 ? ["them", "values go"] : ["it", "value goes"];
    throw new Error(`Not set in your environment: ${missing.join(", ")}. Export ${them} and run again (the ${value} into ${KUBE_SECRET_FILE}), or add ${them} to ${path}. Nothing was written.`);
  }

  const secret = fillTemplate(template.secret, { namespace: plan.namespace, secretData: values }) as KubeObject;
  const metadata = secret.metadata as { labels?: Record<string, string> };
  metadata.labels = fillTemplate(template.labels, { version: packageVersion });
  if (existing.data && Object.keys(existing.data).length > 0) secret.data = existing.data;
  return { secret, ...result };
}

/** Writes the Secret file, readable by its owner only. */
export async function writeKubeSecret(path: string, secret: KubeObject): Promise<void> {
  await writeFile(path, JSON.stringify(secret, null, 2) + "\n", { mode: 0o600 });
  await chmod(path, 0o600);
}
