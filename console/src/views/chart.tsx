/** Counts in equal time buckets over the last hour, drawn as bars (SVG, no library). */
export const BUCKETS = 12;
const HOUR_MS = 3600_000;

/** Sums `value` of each item into twelve five-minute buckets ending now. */
export function bucketize<T>(items: T[], at: (item: T) => string, value: (item: T) => number, now = Date.now()): number[] {
  const sums = new Array<number>(BUCKETS).fill(0);
  const start = now - HOUR_MS;
  for (const item of items) {
    const t = new Date(at(item)).getTime();
    if (!(t >= start && t <= now)) continue;
    sums[Math.min(BUCKETS - 1, Math.floor(((t - start) / HOUR_MS) * BUCKETS))] += value(item);
  }
  return sums;
}

export function BarChart(props: { title: string; values: number[]; unit: string }) {
  const { values } = props;
  const max = Math.max(1, ...values);
  const total = values.reduce((a, b) => a + b, 0);
  const width = 240;
  const height = 64;
  const slot = width / values.length;
  return (
    <figure class="chart" data-chart={props.title}>
      <figcaption>
        {props.title} <span class="muted">· {total.toLocaleString()} {props.unit} in the last hour</span>
      </figcaption>
      <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`${props.title}: ${total} ${props.unit} in the last hour, in five-minute steps: ${values.join(", ")}`} preserveAspectRatio="none">
        <line x1="0" y1={height - 0.5} x2={width} y2={height - 0.5} class="axis" />
        {values.map((v, i) => {
          const h = v === 0 ? 0 : Math.max(2, (v / max) * (height - 4));
          return (
            <rect x={i * slot + 2} y={height - h} width={slot - 4} height={h} rx="1.5">
              <title>{`${60 - i * 5} to ${55 - i * 5} min ago: ${v.toLocaleString()} ${props.unit}`}</title>
            </rect>
          );
        })}
      </svg>
    </figure>
  );
}
