/**
 * A small Prometheus registry: counters, gauges (set directly or read on each
 * scrape), histograms with fixed buckets, rendered in the text exposition
 * format 0.0.4. Written here instead of taken from a library because Ash needs
 * only these three kinds and a few dozen series (docs/decisions/observability-metrics-registry.md).
 */

export type Labels = Record<string, string | number>;

/** One series as a gauge's collect callback reports it. */
export interface GaugeSample {
  labels?: Labels;
  value: number;
}

export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

interface Rendered {
  lines: string[];
}

abstract class Metric {
  abstract readonly type: "counter" | "gauge" | "histogram";

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    if (!METRIC_NAME.test(name)) throw new Error(`Invalid metric name: ${JSON.stringify(name)}`);
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith("__") || label === "le") {
        throw new Error(`Invalid label name for ${name}: ${JSON.stringify(label)}`);
      }
    }
  }

  /** The label values in declaration order; refuses missing or unknown labels. */
  protected valuesOf(labels: Labels | undefined): string[] {
    const given = labels ?? {};
    for (const key of Object.keys(given)) {
      if (!this.labelNames.includes(key)) throw new Error(`${this.name} has no label "${key}"`);
    }
    return this.labelNames.map((label) => {
      const value = given[label];
      if (value === undefined) throw new Error(`${this.name} needs the label "${label}"`);
      return String(value);
    });
  }

  abstract render(): Rendered | Promise<Rendered>;
}

/** A value that only goes up (resets when the process restarts). */
export class Counter extends Metric {
  readonly type = "counter";
  private readonly series = new Map<string, { values: string[]; value: number }>();

  constructor(name: string, help: string, labelNames: readonly string[]) {
    super(name, help, labelNames);
    // Without labels there is one series: show it from the start, so rate() has a zero to begin with.
    if (labelNames.length === 0) this.series.set("", { values: [], value: 0 });
  }

  inc(labels?: Labels, by = 1): void {
    if (!(by >= 0) || !Number.isFinite(by)) throw new RangeError(`${this.name}: a counter only goes up, got ${by}`);
    const values = this.valuesOf(labels);
    const key = values.join("\u0000");
    const entry = this.series.get(key);
    if (entry) entry.value += by;
    else this.series.set(key, { values, value: by });
  }

  /** The current value of one series (0 when it was never incremented). */
  get(labels?: Labels): number {
    return this.series.get(this.valuesOf(labels).join("\u0000"))?.value ?? 0;
  }

  render(): Rendered {
    return { lines: [...this.series.values()].map((s) => sampleLine(this.name, this.labelNames, s.values, s.value)) };
  }
}

/** A value that goes up and down: set directly, or read from `collect` on each scrape. */
export class Gauge extends Metric {
  readonly type = "gauge";
  private readonly series = new Map<string, { values: string[]; value: number }>();

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    private collect?: () => GaugeSample[] | Promise<GaugeSample[]>,
  ) {
    super(name, help, labelNames);
  }

  set(labels: Labels | undefined, value: number): void {
    const values = this.valuesOf(labels);
    this.series.set(values.join("\u0000"), { values, value });
  }

  /** Replaces the callback that reports this gauge's series on each scrape. */
  collectWith(collect: () => GaugeSample[] | Promise<GaugeSample[]>): void {
    this.collect = collect;
  }

  async render(): Promise<Rendered> {
    if (!this.collect) {
      return { lines: [...this.series.values()].map((s) => sampleLine(this.name, this.labelNames, s.values, s.value)) };
    }
    const samples = await this.collect();
    return { lines: samples.map((s) => sampleLine(this.name, this.labelNames, this.valuesOf(s.labels), s.value)) };
  }
}

/** Counts observations into fixed buckets (upper bounds, inclusive), plus their sum and count. */
export class Histogram extends Metric {
  readonly type = "histogram";
  readonly buckets: readonly number[];
  private readonly series = new Map<string, { values: string[]; counts: number[]; sum: number; count: number }>();

  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[]) {
    super(name, help, labelNames);
    if (buckets.length === 0) throw new Error(`${name} needs at least one bucket`);
    for (let i = 0; i < buckets.length; i++) {
      if (!Number.isFinite(buckets[i])) throw new Error(`${name}: bucket bounds must be finite (+Inf is always added)`);
      if (i > 0 && buckets[i] <= buckets[i - 1]) throw new Error(`${name}: bucket bounds must increase`);
    }
    this.buckets = [...buckets];
    if (labelNames.length === 0) this.series.set("", { values: [], counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 });
  }

  observe(labels: Labels | undefined, value: number): void {
    if (Number.isNaN(value)) return;
    const values = this.valuesOf(labels);
    const key = values.join("\u0000");
    let entry = this.series.get(key);
    if (!entry) {
      entry = { values, counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.series.set(key, entry);
    }
    const index = this.buckets.findIndex((bound) => value <= bound);
    if (index !== -1) entry.counts[index]++;
    entry.sum += value;
    entry.count++;
  }

  /** How many observations one series holds. */
  count(labels?: Labels): number {
    return this.series.get(this.valuesOf(labels).join("\u0000"))?.count ?? 0;
  }

  render(): Rendered {
    const lines: string[] = [];
    const bucketLabels = [...this.labelNames, "le"];
    for (const s of this.series.values()) {
      let cumulative = 0;
      this.buckets.forEach((bound, i) => {
        cumulative += s.counts[i];
        lines.push(sampleLine(`${this.name}_bucket`, bucketLabels, [...s.values, formatValue(bound)], cumulative));
      });
      lines.push(sampleLine(`${this.name}_bucket`, bucketLabels, [...s.values, "+Inf"], s.count));
      lines.push(sampleLine(`${this.name}_sum`, this.labelNames, s.values, s.sum));
      lines.push(sampleLine(`${this.name}_count`, this.labelNames, s.values, s.count));
    }
    return { lines };
  }
}

export interface RegistryOptions {
  /** A gauge's collect callback that takes longer is left out of that scrape. */
  collectTimeoutMs?: number;
  /** Told about a collect callback that failed or timed out. */
  onCollectError?: (metric: string, error: unknown) => void;
}

export class Registry {
  private readonly metrics = new Map<string, Metric>();

  constructor(private readonly options: RegistryOptions = {}) {}

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.add(new Counter(name, help, labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = [], collect?: () => GaugeSample[] | Promise<GaugeSample[]>): Gauge {
    return this.add(new Gauge(name, help, labelNames, collect));
  }

  histogram(name: string, help: string, labelNames: readonly string[], buckets: readonly number[]): Histogram {
    return this.add(new Histogram(name, help, labelNames, buckets));
  }

  /**
   * The whole registry in the text format. Gauges read on scrape run in
   * parallel; one that fails or is too slow is left without samples (its
   * HELP and TYPE stay), so a slow database never hangs a scrape.
   */
  async render(): Promise<string> {
    const timeoutMs = this.options.collectTimeoutMs ?? 2000;
    const parts = await Promise.all(
      [...this.metrics.values()].map(async (metric) => {
        let lines: string[] = [];
        try {
          lines = (await withTimeout(Promise.resolve().then(() => metric.render()), timeoutMs, metric.name)).lines;
        } catch (error) {
          this.options.onCollectError?.(metric.name, error);
        }
        return [`# HELP ${metric.name} ${escapeHelp(metric.help)}`, `# TYPE ${metric.name} ${metric.type}`, ...lines].join("\n");
      }),
    );
    return parts.join("\n") + "\n";
  }

  private add<M extends Metric>(metric: M): M {
    if (this.metrics.has(metric.name)) throw new Error(`Metric ${metric.name} is registered twice`);
    this.metrics.set(metric.name, metric);
    return metric;
  }
}

function sampleLine(name: string, labelNames: readonly string[], values: readonly string[], value: number): string {
  const labels = labelNames.map((label, i) => `${label}="${escapeLabelValue(values[i])}"`).join(",");
  return `${name}${labels ? `{${labels}}` : ""} ${formatValue(value)}`;
}

/** Label values escape backslash, double quote and line feed. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** HELP text escapes backslash and line feed. */
export function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

export function formatValue(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  if (Number.isNaN(value)) return "NaN";
  return String(value);
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`collecting ${what} took longer than ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
