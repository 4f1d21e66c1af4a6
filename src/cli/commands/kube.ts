import { writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
import { defineCommand } from "citty";
import {
  buildKubernetes,
  collectRepeatedFlag,
  KUBE_DEFAULTS,
  KUBE_SECRET_FILE,
  parseEnvAssignment,
  prepareKubeSecret,
  renderKubernetes,
  writeKubeSecret,
} from "../../runspec";
import { deploymentArgs, exists } from "../deployment-args";
import { CliError, parseInput, usageError } from "../errors";
import { line, note, style } from "../output";

const generateArgs = {
  "database-url": { type: "string", description: "Your PostgreSQL or CockroachDB (stored in the Secret)", valueHint: "postgresql://..." },
  database: { type: "string", description: "Instead: a single-node database in the cluster, for trying Ash out", valueHint: "cockroach|postgres" },
  "snapshot-store": { type: "string", description: "Workspaces in an S3 bucket (needed for --replicas above 1); AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from your environment", valueHint: "s3://bucket[/prefix]" },
  "s3-endpoint": { type: "string", description: "The bucket's S3 endpoint (MinIO, R2, ...)", valueHint: "url" },
  "s3-region": { type: "string", description: "The bucket's region", valueHint: "region" },
  replicas: { type: "string", description: `Ash servers (default ${KUBE_DEFAULTS.replicas})`, valueHint: "n" },
  namespace: { type: "string", alias: "n", description: `Namespace (default ${KUBE_DEFAULTS.namespace}); the file creates it`, valueHint: "name" },
  output: { type: "string", alias: "o", description: `File to write (default ash.yaml); the Secret goes to ${KUBE_SECRET_FILE} beside it`, valueHint: "file" },
  force: { type: "boolean", description: `Overwrite the output file if it exists (keys in ${KUBE_SECRET_FILE} are never replaced)` },
  cpu: { type: "string", description: `CPU each server requests (default ${KUBE_DEFAULTS.cpu})`, valueHint: "quantity" },
  memory: { type: "string", description: `Memory of each server and its sandboxes (default ${KUBE_DEFAULTS.memory})`, valueHint: "quantity" },
  "data-size": { type: "string", description: `Volume for workspaces without a bucket (default ${KUBE_DEFAULTS.dataSize})`, valueHint: "quantity" },
  "database-size": { type: "string", description: `Volume of the single-node database (default ${KUBE_DEFAULTS.databaseSize})`, valueHint: "quantity" },
  ...deploymentArgs,
  env: { type: "string", alias: "e", description: "Extra variable for the server; repeatable. A bare KEY is read from your environment into the Secret", valueHint: "KEY=VALUE" },
} as const;

const generate = defineCommand({
  meta: { name: "generate", description: "Write Kubernetes manifests for Ash (Deployment, Service, ConfigMap, PodDisruptionBudget, NetworkPolicy) and its Secret" },
  args: generateArgs,
  run: async ({ args: flags, rawArgs }) => {
    const options = parseInput(() => ({
      databaseUrl: flags["database-url"],
      database: flags.database,
      snapshotStore: flags["snapshot-store"],
      s3Endpoint: flags["s3-endpoint"],
      s3Region: flags["s3-region"],
      replicas: flags.replicas,
      namespace: flags.namespace,
      image: flags.image || undefined,
      cpu: flags.cpu,
      memory: flags.memory,
      dataSize: flags["data-size"],
      databaseSize: flags["database-size"],
      maxSandboxes: flags["max-sandboxes"],
      idleTimeoutMs: flags["idle-timeout"],
      env: collectRepeatedFlag(rawArgs, "e", "env").map(parseEnvAssignment),
    }));
    const { secret: plan } = parseInput(() => buildKubernetes(options));
    const yaml = renderKubernetes(options);

    const output = resolve(flags.output || "ash.yaml");
    const secretPath = join(dirname(output), KUBE_SECRET_FILE);
    const shown = (path: string) => relative(process.cwd(), path) || path;
    if (!(await exists(dirname(output)))) throw usageError(`The folder ${dirname(output)} does not exist; create it first.`);
    if (output === secretPath) throw usageError(`${KUBE_SECRET_FILE} is where the Secret goes; choose another --output.`);
    if ((await exists(output)) && !flags.force) {
      throw new CliError(`${shown(output)} already exists; nothing was written. Add --force to replace it (keys in ${KUBE_SECRET_FILE} are kept either way).`);
    }
    const secret = await prepareKubeSecret(secretPath, plan).catch((error) => {
      // A file that cannot be read is a failure; a Secret file that is not ours, or a missing value, is bad input.
      throw error?.code ? error : usageError((error as Error).message);
    });

    // The Secret first: manifests whose Secret is missing would not start.
    await writeKubeSecret(secretPath, secret.secret);
    await writeFile(output, yaml);

    line(`Wrote ${shown(output)} and ${shown(secretPath)} (namespace ${plan.namespace}).`);
    for (const [name, value] of Object.entries(secret.generated)) {
      line(`${secret.createdFile ? "Created" : "Added to"} ${shown(secretPath)}: ${name}=${name === "ASH_API_KEY" ? style.bold(value) : "(generated)"}`);
    }
    for (const name of secret.fromEnvironment) line(`Added to ${shown(secretPath)}: ${name} (from your environment)`);
    for (const name of secret.replaced) line(`Replaced ${name} in ${shown(secretPath)} (given by a flag).`);
    if (secret.kept.length) line(`Kept ${secret.kept.join(", ")} already in ${shown(secretPath)}.`);
    if (secret.generated.ASH_API_KEY) note(style.dim(`The API key is shown once here; it stays in ${shown(secretPath)}.`, process.stderr));
    if (secret.absent.includes("ANTHROPIC_API_KEY")) {
      note(`No ANTHROPIC_API_KEY: add it to stringData in ${shown(secretPath)}, or store model keys as credentials (ash credentials).`);
    }
    line(`Apply with: kubectl apply -f ${shown(output)} -f ${shown(secretPath)}`);
    return 0;
  },
});

export default defineCommand({
  meta: { name: "kube", description: "Deployment on Kubernetes" },
  subCommands: { generate },
});
