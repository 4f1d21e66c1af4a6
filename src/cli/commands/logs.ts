import { defineCommand } from "citty";
import { containerName } from "../../runspec";
import { connectDocker, copyLogs, findAshContainer } from "../docker";
import { CliError, EXIT, parseInput } from "../errors";

const args = {
  follow: { type: "boolean", alias: "f", description: "Keep printing new lines until Ctrl-C or the server stops" },
  tail: { type: "string", description: "Only the last N lines (default: all)", valueHint: "N" },
} as const;

function parseTail(value: string | undefined): number | undefined {
  if (value === undefined || value === "") return undefined;
  if (!/^\d+$/.test(value)) throw new CliError(`--tail must be a whole number of lines, got ${JSON.stringify(value)}`, EXIT.USAGE);
  return Number(value);
}

export default defineCommand({
  meta: { name: "logs", description: "Print the Ash server's log (stdout and stderr kept apart)" },
  args,
  run: async ({ args: flags, rawArgs }) => {
    const tail = parseInput(() => parseTail(flags.tail));
    const docker = await connectDocker();
    const found = await findAshContainer(docker);
    if (!found) throw new CliError(`There is no ${containerName()} container, so there is no log; start the server with \`ash start\`.`);
    const abort = new AbortController();
    const stop = () => abort.abort();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    try {
      await copyLogs(found.container, { follow: Boolean(flags.follow), tail, signal: abort.signal });
    } finally {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
    }
    return 0;
  },
});
