import { stat } from "node:fs/promises";
import { defineCommand } from "citty";
import { AGENT_NAME, agentNameFromFolder, parseEnvAssignment, readAgentFolder } from "../../agents/local-folder";
import { jsonArg, serverArgs, usageError, withServer } from "../errors";
import { formatBytes, line, note, printJson, style } from "../output";

/**
 * Every value of a flag that may be given more than once (`-e A=1 -e B=2`). citty keeps only
 * the last one, so the command reads its raw arguments itself. Accepts `-e V`, `-eV`,
 * `--env V` and `--env=V`; stops at `--`.
 */
export function repeatedFlag(rawArgs: string[], long: string, short?: string): string[] {
  const values: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i];
    if (arg === "--") break;
    if (arg === `--${long}` || (short !== undefined && arg === `-${short}`)) {
      const value = rawArgs[i + 1];
      if (value === undefined) throw usageError(`${arg} needs a value after it.`);
      values.push(value);
      i++;
    } else if (arg.startsWith(`--${long}=`)) {
      values.push(arg.slice(long.length + 3));
    } else if (short !== undefined && arg.startsWith(`-${short}`) && !arg.startsWith("--") && arg.length > 2) {
      values.push(arg.slice(2).replace(/^=/, ""));
    }
  }
  return values;
}

/** The `-e KEY=VALUE` flags as variables; a later flag wins over an earlier one. */
export function envFromFlags(rawArgs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const assignment of repeatedFlag(rawArgs, "env", "e")) {
    const [key, value] = parseEnvAssignment(assignment);
    env[key] = value;
  }
  return env;
}

export default defineCommand({
  meta: { name: "deploy", description: "Deploy an agent folder (CLAUDE.md, .claude/, .mcp.json, data files) to the server" },
  args: {
    dir: { type: "positional", description: "The agent folder", required: true },
    name: { type: "string", description: "Agent name (default: the folder's name)", valueHint: "name" },
    env: { type: "string", alias: "e", description: "Environment variable for the agent, KEY=VALUE (repeatable; .env files in the folder are read too)", valueHint: "KEY=VALUE" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args, rawArgs }) =>
    withServer(args, async ({ client }) => {
      // A file given by mistake is named as such, not as a bad agent name.
      if ((await stat(args.dir).catch(() => undefined))?.isFile()) {
        throw usageError(`${args.dir} is a file, and an agent is a folder: give the folder that holds CLAUDE.md (and .claude/, .mcp.json, data files).`);
      }
      const name = args.name || agentNameFromFolder(args.dir);
      if (!name) {
        throw usageError(`The folder name of ${args.dir} is not a valid agent name; pass one with --name (letters, digits, - and _, up to 64).`);
      }
      if (!AGENT_NAME.test(name)) {
        throw usageError(`"${name}" is not a valid agent name; use letters, digits, - and _ (up to 64).`);
      }
      const flagEnv = envFromFlags(rawArgs);
      const folder = await readAgentFolder(args.dir);
      const env = { ...folder.env, ...flagEnv };

      if (folder.envFiles.length > 0 && !args.json) {
        const count = Object.keys(folder.env).length;
        note(style.dim(`Read ${folder.envFiles.join(", ")} as the agent's environment (${count} variable${count === 1 ? "" : "s"}, not uploaded as files).`, process.stderr));
      }

      const agent = await client.deployAgent({
        name,
        files: folder.files,
        ...(Object.keys(env).length > 0 ? { env } : {}),
      });

      if (args.json) {
        printJson(agent);
      } else {
        const size = `${folder.files.length} file${folder.files.length === 1 ? "" : "s"}, ${formatBytes(folder.totalBytes)}`;
        line(`Deployed ${style.bold(agent.name)} version ${agent.version} (${size}).`);
      }
    }),
});
