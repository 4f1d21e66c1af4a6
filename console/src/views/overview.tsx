import { useEffect } from "preact/hooks";
import type { ViewProps } from "../main";
import { count } from "../format";
import { Loading, Problem, useLoad } from "./common";

/** Midnight UTC today: the server counts daily token limits from it too. */
function todayUtc(): string {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate())).toISOString();
}

export function Overview(props: ViewProps) {
  const { data, error, reload } = useLoad(
    props,
    async () => {
      const [health, usage, analytics] = await Promise.all([props.client.health(), props.client.usageStats({ from: todayUtc() }), props.client.analytics()]);
      return { health, usage, analytics };
    },
    [props.client],
  );
  useEffect(() => {
    const timer = setInterval(reload, 5000);
    return () => clearInterval(timer);
  }, [reload]);

  if (!data) return error ? <Problem text={error} /> : <Loading />;
  const { health, usage, analytics } = data;
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
