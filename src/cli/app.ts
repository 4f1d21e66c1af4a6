import { defineCommand } from "citty";
import { version } from "../version";
import { runCli } from "./boundary";

// Each command lives in its own module and is loaded only when it is run,
// so `ash --help` and quick commands do not pay for dockerode or the client.
export const main = defineCommand({
  meta: {
    name: "ash",
    version,
    description: "Run the Ash agent server and talk to it",
  },
  subCommands: {
    start: () => import("./commands/start").then((m) => m.default),
    status: () => import("./commands/status").then((m) => m.default),
    logs: () => import("./commands/logs").then((m) => m.default),
    stop: () => import("./commands/stop").then((m) => m.default),
    compose: () => import("./commands/compose").then((m) => m.default),
    kube: () => import("./commands/kube").then((m) => m.default),
    health: () => import("./commands/health").then((m) => m.default),
    deploy: () => import("./commands/deploy").then((m) => m.default),
    agent: () => import("./commands/agent").then((m) => m.default),
    session: () => import("./commands/session").then((m) => m.default),
    chat: () => import("./commands/chat").then((m) => m.default),
    keys: () => import("./commands/keys").then((m) => m.default),
    credentials: () => import("./commands/credentials").then((m) => m.default),
    queue: () => import("./commands/queue").then((m) => m.default),
    eval: () => import("./commands/eval").then((m) => m.default),
  },
});

/** Runs one `ash` command line and says its exit code; it never exits the process. */
export function runAsh(rawArgs: string[]): Promise<number> {
  return runCli(main, rawArgs);
}
