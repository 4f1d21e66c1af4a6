import { defineCommand } from "citty";
import { jsonArg, serverArgs, withServer } from "../errors";
import { formatDuration, line, printJson, style } from "../output";

export default defineCommand({
  meta: { name: "health", description: "Check that the server answers and show what it is running" },
  args: { ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client, url }) => {
      const health = await client.health();
      if (args.json) {
        printJson(health);
      } else {
        const ok = health.status === "ok";
        line(`${ok ? style.green("ok") : style.red(health.status)} · Ash ${health.version} at ${url} · up ${formatDuration(health.uptime ?? 0)}`);
        const sessions = health.activeSessions ?? 0;
        const sandboxes = health.activeSandboxes ?? 0;
        line(
          `${sessions} active session${sessions === 1 ? "" : "s"} · ${sandboxes} sandbox${sandboxes === 1 ? "" : "es"} · ` +
            `isolation: ${health.isolation?.mode === "none" ? style.red("NONE (unisolated)") : `${health.isolation?.mode ?? "unknown"}${health.isolation?.seccomp ? "+seccomp" : ""}`} · ` +
            `limits: ${health.limits?.mode ?? "unknown"} · database: ${health.database ?? "unknown"}`,
        );
      }
      // A degraded server (database unreachable) is a failure for scripts that check the exit code.
      return health.status === "ok" ? 0 : 1;
    }),
});
