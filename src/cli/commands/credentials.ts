import { defineCommand } from "citty";
import { CREDENTIAL_TYPES } from "../../contract";
import { isNotFound, jsonArg, serverArgs, usageError, withServer, CliError } from "../errors";
import { line, note, printJson, printTable, style, timeAgo } from "../output";

const TYPES = CREDENTIAL_TYPES;

const add = defineCommand({
  meta: { name: "add", description: "Store a secret sealed (from stdin or --from-env, so it stays out of shell history); prints its id" },
  args: {
    type: { type: "positional", description: `What it is: ${TYPES.join(", ")}`, required: true },
    label: { type: "string", description: "A name for it", valueHint: "text" },
    variable: { type: "string", description: "For custom: the environment variable a session gets it as", valueHint: "NAME" },
    "from-env": { type: "string", description: "Read the secret from this environment variable instead of stdin", valueHint: "NAME" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      if (!(TYPES as readonly string[]).includes(args.type)) throw usageError(`The type is one of ${TYPES.join(", ")}, not "${args.type}".`);
      let key: string;
      if (args["from-env"]) {
        key = process.env[args["from-env"]]?.trim() ?? "";
        if (!key) throw usageError(`The variable ${args["from-env"]} is not set or empty.`);
      } else {
        const chunks: Buffer[] = [];
        for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk));
        key = Buffer.concat(chunks).toString("utf8").trim();
      }
      if (!key) throw usageError("Give the secret on stdin, e.g. `printf %s \"$ANTHROPIC_API_KEY\" | ash credentials add anthropic`.");
      const credential = await client.addCredential({ type: args.type as (typeof TYPES)[number], key, label: args.label || undefined, variable: args.variable || undefined });
      if (args.json) return printJson(credential);
      line(credential.id);
      note(style.dim(`Stored ${credential.type} credential ${credential.id} sealed; name it as credentialId on an agent or session.`, process.stderr));
    }),
});

const list = defineCommand({
  meta: { name: "list", description: "List stored credentials (never their secrets)" },
  args: { ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const credentials = await client.listCredentials();
      if (args.json) return printJson(credentials);
      if (credentials.length === 0) {
        note("No credentials stored; add one with `ash credentials add anthropic < key-file`.");
        return;
      }
      printTable(
        ["ID", "TYPE", "LABEL", "VARIABLE", "CREATED", "LAST USED"],
        credentials.map((c) => [c.id, c.type, c.label || "-", c.variable ?? "-", timeAgo(c.createdAt), c.lastUsedAt ? timeAgo(c.lastUsedAt) : "never"]),
      );
    }),
});

const remove = defineCommand({
  meta: { name: "remove", description: "Delete a stored credential" },
  args: { id: { type: "positional", description: "Credential id", required: true }, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      await client.removeCredential(args.id).catch((error) => {
        throw isNotFound(error) ? new CliError(`No credential with id "${args.id}"; \`ash credentials list\` shows them.`) : error;
      });
      if (args.json) return printJson({ removed: args.id });
      line(`Removed credential ${args.id}.`);
    }),
});

export default defineCommand({
  meta: { name: "credentials", description: "Store model keys and other secrets sealed on the server" },
  subCommands: { add, list, remove },
});
