import { useEffect } from "preact/hooks";
import type { ViewProps } from "../main";
import { count } from "../format";
import { Loading, Problem, useLoad } from "./common";
import { BarChart, bucketize } from "./chart";
import type { AshClient, Session, UsageRecord } from "../../../src/client";

/** Pages read for the charts at most (1000 usage records, 500 sessions each). */
const CHART_PAGES = 3;

/** The last hour's model calls and sessions, as the tenant's key may see them. */
async function lastHour(client: AshClient): Promise<{ usage: UsageRecord[]; sessions: Session[] }> {
  const from = new Date(Date.now() - 3600_000).toISOString();
  const usage: UsageRecord[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < CHART_PAGES; page++) {
    const answer = await client.listUsage({ from, limit: 1000, cursor });
    usage.push(...answer.usage);
    if (!answer.nextCursor) break;
    cursor = answer.nextCursor;
  }
  // Sessions come newest first: stop at the first page that reaches past the hour.
  const sessions: Session[] = [];
  cursor = undefined;
  for (let page = 0; page < CHART_PAGES; page++) {
    const answer = await client.listSessions({ limit: 500, cursor });
    sessions.push(...answer.sessions);
    if (!answer.nextCursor || answer.sessions.some((s) => s.createdAt < from)) break;
    cursor = answer.nextCursor;
  }
  return { usage, sessions };
}

/** Midnight UTC today: the server counts daily token limits from it too. */
function todayUtc(): string {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate())).toISOString();
}

export function Overview(props: ViewProps) {
  const { data, error, reload } = useLoad(
    props,
    async () => {
      const [health, usage, analytics, hour] = await Promise.all([props.client.health(), props.client.usageStats({ from: todayUtc() }), props.client.analytics(), lastHour(props.client)]);
      return { health, usage, analytics, hour };
    },
    [props.client],
  );
  useEffect(() => {
    const timer = setInterval(reload, 5000);
    return () => clearInterval(timer);
  }, [reload]);

  if (!data) return error ? <Problem text={error} /> : <Loading />;
  const { health, usage, analytics, hour } = data;
  const pool = health.pool as { max?: number; live?: number; busy?: number; warm?: { total?: number } };
  const cards: Array<[string, string, string?]> = [
    ["Health", health.status, health.status === "ok" ? "good" : "bad"],
    ["Version", health.version],
    ["Database", health.database],
    ["Isolation", `${health.isolation.mode}${health.isolation.seccomp ? " + seccomp" : ""}`, health.isolation.mode === "none" ? "bad" : undefined],
    ["Limits", health.limits.mode],
    ["Sandboxes live / max", `${count(pool.live)} / ${count(pool.max)}`],
    ["Warm spares", count(pool.warm?.total)],
    ["Turns running", count(pool.busy)],
    ["Tokens today", count(usage.totals.totalTokens)],
    ["Sessions", count(analytics.sessions.total)],
    ["Agents", count(analytics.agents.total)],
  ];
  return (
    <section aria-labelledby="overview-title">
      <h1 id="overview-title">Overview</h1>
      <Problem text={error} />
      <dl class="cards">
        {cards.map(([label, value, tone]) => (
          <div class={`card ${tone ?? ""}`} data-card={label}>
            <dt>{label}</dt>
            <dd>{value}</dd>
          </div>
        ))}
      </dl>
      <div class="charts">
        <BarChart title="Tokens" unit="tokens" values={bucketize(hour.usage, (u) => u.createdAt, (u) => u.inputTokens + u.outputTokens)} />
        <BarChart title="Model calls" unit="calls" values={bucketize(hour.usage, (u) => u.createdAt, () => 1)} />
        <BarChart title="Sessions started" unit="sessions" values={bucketize(hour.sessions, (s) => s.createdAt, () => 1)} />
      </div>
      {Object.keys(analytics.sessions.byStatus).length > 0 && (
        <>
          <h2>Sessions by status</h2>
          <ul class="inline">
            {Object.entries(analytics.sessions.byStatus).map(([status, n]) => (
              <li>
                <span class={`status status-${status}`}>{status}</span> {count(n)}
              </li>
            ))}
          </ul>
        </>
      )}
      <p class="muted">Up {Math.round(health.uptime / 60)} min · refreshes every 5 s</p>
    </section>
  );
}
