import { defineCommand } from "citty";
import { containerName, DEFAULT_PORT } from "../../runspec";
import { connectDocker, fetchHealth, findAshContainer, publishedPort, serverUrl } from "../docker";
import { line, printFields, printJson, style, timeAgo } from "../output";

const args = {
  json: { type: "boolean", description: "Print JSON instead of text" },
} as const;

export interface StatusReport {
  /** True when the container runs and GET /health answers 200. */
  healthy: boolean;
  container: null | {
    id: string;
    name: string;
    state: string;
    running: boolean;
    exitCode: number | null;
    image: string;
    startedAt: string | null;
    port: number;
    dataDir: string | null;
  };
  url: string | null;
  health: null | { statusCode: number; body: unknown };
}

export default defineCommand({
  meta: { name: "status", description: "Show the Ash server container's state and its /health answer" },
  args,
  run: async ({ args: flags, rawArgs }) => {
    const docker = await connectDocker();
    const found = await findAshContainer(docker);
    const report: StatusReport = { healthy: false, container: null, url: null, health: null };
    if (found) {
      const { info } = found;
      const port = publishedPort(info) ?? DEFAULT_PORT;
      report.container = {
        id: info.Id.slice(0, 12),
        name: info.Name.replace(/^\//, ""),
        state: info.State.Status,
        running: info.State.Running,
        exitCode: info.State.Running ? null : info.State.ExitCode,
        image: info.Config.Image,
        startedAt: info.State.Running ? info.State.StartedAt : null,
        port,
        dataDir: info.Config.Labels?.["ai.ash.data-dir"] ?? null,
      };
      if (info.State.Running) {
        report.url = serverUrl(port);
        const answer = await fetchHealth(report.url, 5000);
        if (answer) report.health = { statusCode: answer.status, body: answer.body };
        report.healthy = answer?.status === 200;
      }
    }

    if (flags.json) {
      printJson(report);
      return report.healthy ? 0 : 1;
    }
    const c = report.container;
    if (!c) {
      line(`Ash is not running (there is no ${containerName()} container); start it with \`ash start\`.`);
      return 1;
    }
    if (!c.running) {
      line(`Ash is not running: the ${c.name} container is ${c.state} (exit code ${c.exitCode}); \`ash logs\` shows why, \`ash start\` starts it again.`);
      return 1;
    }
    const body = (report.health?.body ?? {}) as Record<string, any>;
    const verdict = report.healthy
      ? style.green("healthy")
      : report.health
        ? style.red(`unhealthy (/health answered ${report.health.statusCode}${body.status ? `, ${body.status}` : ""})`)
        : style.red("not answering on /health");
    line(`Ash is running · ${verdict}`);
    printFields([
      ["URL", report.url],
      ["Container", `${c.name} (${c.id}), started ${timeAgo(c.startedAt)}`],
      ["Image", c.image],
      ["Data folder", c.dataDir],
      ["Version", typeof body.version === "string" ? body.version : undefined],
      ["Database", typeof body.database === "string" ? body.database : undefined],
      ["Limits", typeof body.limits?.mode === "string" ? body.limits.mode : undefined],
      [
        "Sessions",
        typeof body.activeSessions === "number" ? `${body.activeSessions} active, ${body.activeSandboxes ?? 0} sandboxes` : undefined,
      ],
    ]);
    return report.healthy ? 0 : 1;
  },
});
