import { writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
import { defineCommand } from "citty";
import {
  collectRepeatedFlag,
  composeSecretNames,
  DEFAULT_PORT,
  ensureDotEnvSecrets,
  parseDatabase,
  parseEnvAssignment,
  renderCompose,
} from "../../runspec";
import { deploymentArgs, exists } from "../deployment-args";
import { CliError, parseInput, usageError } from "../errors";
import { line, note, style } from "../output";

const generateArgs = {
  database: { type: "string", description: "cockroach (default) or postgres", valueHint: "cockroach|postgres" },
  output: { type: "string", alias: "o", description: "File to write (default docker-compose.yml)", valueHint: "file" },
  force: { type: "boolean", description: "Overwrite the output file if it exists (.env keys are never replaced)" },
  port: { type: "string", description: `Host port for the API (default ${DEFAULT_PORT})`, valueHint: "port" },
  ...deploymentArgs,
  env: { type: "string", alias: "e", description: "Extra variable for the server; repeatable. A bare KEY becomes ${KEY} (from .env)", valueHint: "KEY=VALUE" },
} as const;

const generate = defineCommand({
  meta: { name: "generate", description: "Write a production Compose file (Ash + CockroachDB or PostgreSQL) and its .env" },
  args: generateArgs,
  run: async ({ args: flags, rawArgs }) => {
    const database = parseInput(() => parseDatabase(flags.database || undefined));
    const yaml = parseInput(() =>
      renderCompose({
        database,
        image: flags.image || undefined,
        port: flags.port,
        maxSandboxes: flags["max-sandboxes"],
        idleTimeoutMs: flags["idle-timeout"],
        env: collectRepeatedFlag(rawArgs, "e", "env").map(parseEnvAssignment),
      }),
    );

    const output = resolve(flags.output || "docker-compose.yml");
    const envPath = join(dirname(output), ".env");
    const shown = (path: string) => relative(process.cwd(), path) || path;
    if (!(await exists(dirname(output)))) throw usageError(`The folder ${dirname(output)} does not exist; create it first.`);
    if ((await exists(output)) && !flags.force) {
      throw new CliError(`${shown(output)} already exists; nothing was written. Add --force to replace it (keys in .env are kept either way).`);
    }

    // Secrets first: a Compose file that needs a missing key would not start.
    const env = await ensureDotEnvSecrets(envPath, composeSecretNames(database), [
      "Secrets for the Ash Compose file beside this one. Keep this file out of version control",
      "and with your backups. Add ANTHROPIC_API_KEY=... here or export it in the shell.",
    ]);
    await writeFile(output, yaml);

    line(`Wrote ${shown(output)} (Ash with ${database === "postgres" ? "PostgreSQL 16" : "CockroachDB"}).`);
    for (const [name, value] of Object.entries(env.generated)) {
      line(`${env.createdFile ? "Created" : "Added to"} ${shown(envPath)}: ${name}=${name === "ASH_API_KEY" ? style.bold(value) : "(generated)"}`);
    }
    if (env.kept.length) line(`Kept ${env.kept.join(" and ")} already in ${shown(envPath)}.`);
    if (env.generated.ASH_API_KEY) note(style.dim("The API key is shown once here; it stays in .env.", process.stderr));
    const file = shown(output) === "docker-compose.yml" ? "" : ` -f ${shown(output)}`;
    line(`Start it with: docker compose${file} up -d   (or docker-compose${file} up -d)`);
    return 0;
  },
});

export default defineCommand({
  meta: { name: "compose", description: "Production deployment with Docker Compose" },
  subCommands: { generate },
});
