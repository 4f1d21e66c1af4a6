/** Median and 95th percentile of a sample, in the sample's unit. */
export function summarize(samples: number[]): { n: number; median: number; p95: number; min: number; max: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN;
  return { n: sorted.length, median: at(0.5), p95: at(0.95), min: sorted[0] ?? NaN, max: sorted.at(-1) ?? NaN };
}

export function row(name: string, samples: number[], unit = "ms"): string {
  const s = summarize(samples);
  return `${name.padEnd(52)} n=${String(s.n).padStart(3)}  median ${s.median.toFixed(1).padStart(8)} ${unit}  p95 ${s.p95.toFixed(1).padStart(8)} ${unit}`;
}

/**
 * Reads a turn's event stream to its end; returns the milliseconds from
 * `started` (a performance.now() reading) to the first `text_delta` frame.
 */
export async function msToFirstText(response: Response, started: number): Promise<number> {
  const reader = response.body!.getReader();
  let text = "";
  let first = NaN;
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
    text += new TextDecoder().decode(chunk.value);
    if (Number.isNaN(first) && text.includes("event: text_delta")) first = performance.now() - started;
  }
  return first;
}
