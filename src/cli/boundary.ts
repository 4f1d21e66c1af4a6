import { renderUsage, runCommand, type CommandDef } from "citty";
import { CliError, describeError, EXIT, rejectUnknownFlags } from "./errors";
import { note, style } from "./output";

/**
 * The CLI's one error boundary. Commands return an exit code (nothing means 0)
 * or throw; this resolves which command a command line names, refuses options
 * that command does not define (citty would ignore them), shows help, runs the
 * command, and turns whatever it threw into one sentence on stderr and an exit
 * code. It never exits the process itself, so tests run commands in-process.
 */
export async function runCli(main: CommandDef<any>, rawArgs: string[]): Promise<number> {
  let resolved: Resolved | undefined;
  try {
    resolved = await resolveCommand(main, rawArgs);
    const { cmd, parent, path, args } = resolved;
    if (args.includes("--help") || args.includes("-h")) {
      await printUsage(cmd, parent, process.stdout);
      return 0;
    }
    if (path.length === 0 && args.length === 1 && (args[0] === "--version" || args[0] === "-v")) {
      const meta = await resolveValue(main.meta);
      process.stdout.write(`${meta?.version ?? ""}\n`);
      return 0;
    }
    const subCommands = await resolveValue(cmd.subCommands);
    if (subCommands && !cmd.run) {
      await printUsage(cmd, parent, process.stderr);
      const name = ["ash", ...path].join(" ");
      throw new CliError(
        args[0] && !args[0].startsWith("-") ? `Unknown command "${args[0]}" for ${name}; see \`${name} --help\`.` : `${name} needs a command; see \`${name} --help\`.`,
        EXIT.USAGE,
      );
    }
    rejectUnknownFlags(args, (await resolveValue(cmd.args)) ?? {}, path.join(" "));
    const { result } = await runCommand(cmd, { rawArgs: args });
    return typeof result === "number" ? result : 0;
  } catch (error) {
    note(style.red(describeError(error), process.stderr));
    const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
    if (process.env.DEBUG && cause instanceof Error && cause.stack) note(style.dim(cause.stack, process.stderr));
    return error instanceof CliError ? error.exitCode : EXIT.FAILED;
  }
}

interface Resolved {
  cmd: CommandDef<any>;
  parent?: CommandDef<any>;
  /** Command names after `ash`, e.g. ["session", "send"]. */
  path: string[];
  /** The arguments that belong to `cmd`. */
  args: string[];
}

/** Follows subcommand names from the front of the command line (group commands take no options of their own). */
async function resolveCommand(main: CommandDef<any>, rawArgs: string[]): Promise<Resolved> {
  let cmd = main;
  let parent: CommandDef<any> | undefined;
  const path: string[] = [];
  let args = rawArgs;
  for (;;) {
    const subCommands = await resolveValue(cmd.subCommands);
    const name = args[0];
    if (!subCommands || name === undefined || name.startsWith("-")) return { cmd, parent, path, args };
    const next = subCommands[name];
    if (!next) return { cmd, parent, path, args };
    parent = cmd;
    cmd = await resolveValue(next as CommandDef<any> | (() => Promise<CommandDef<any>>));
    path.push(name);
    args = args.slice(1);
  }
}

type Resolvable<T> = T | Promise<T> | (() => T | Promise<T>);

async function resolveValue<T>(value: Resolvable<T>): Promise<T> {
  return typeof value === "function" ? await (value as () => T | Promise<T>)() : await value;
}

async function printUsage(cmd: CommandDef<any>, parent: CommandDef<any> | undefined, stream: NodeJS.WriteStream): Promise<void> {
  stream.write(`${await renderUsage(cmd, parent)}\n\n`);
}
