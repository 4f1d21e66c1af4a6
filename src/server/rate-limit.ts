import { rateLimited } from "../errors";

/**
 * Requests a minute, per key and per tenant, as token buckets: a bucket
 * holds up to `perMinute` requests and refills at `perMinute` a minute, so
 * a burst of exactly `perMinute` passes and the next one is refused with
 * the time until one is free. Each server counts its own requests.
 */
export class RequestBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number; perMinute: number }>();

  /** Takes one request from `key`'s bucket, or throws a 429 naming `who`. */
  take(key: string, perMinute: number, who: string, now = Date.now()): void {
    let bucket = this.buckets.get(key);
    if (!bucket || bucket.perMinute !== perMinute) {
      bucket = { tokens: perMinute, at: now, perMinute };
      this.buckets.set(key, bucket);
    }
    bucket.tokens = Math.min(perMinute, bucket.tokens + ((now - bucket.at) * perMinute) / 60_000);
    bucket.at = now;
    if (bucket.tokens < 1) {
      const wait = Math.max(1, Math.ceil(((1 - bucket.tokens) * 60_000) / perMinute / 1000));
      throw rateLimited(`Too many requests: ${who} may make ${perMinute} a minute; try again in ${wait} s.`, wait);
    }
    bucket.tokens -= 1;
    // Bounded: buckets full again are forgotten now and then.
    if (this.buckets.size > 10_000) for (const [k, b] of this.buckets) if (b.tokens >= b.perMinute) this.buckets.delete(k);
  }
}
