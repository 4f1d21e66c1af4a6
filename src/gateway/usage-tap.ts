/** Token counts of one model response, as the Messages API reports them. */
export interface ModelUsage {
  model: string;
  inputTokens: number;
  outputTokens: number;
  cacheCreationTokens: number;
  cacheReadTokens: number;
}

const n = (value: unknown) => (typeof value === "number" && Number.isFinite(value) && value >= 0 ? Math.floor(value) : 0);

export function emptyUsage(model = "unknown"): ModelUsage {
  return { model, inputTokens: 0, outputTokens: 0, cacheCreationTokens: 0, cacheReadTokens: 0 };
}

/** Copies the fields a `usage` object has onto `into` (message_delta repeats only what changed). */
function apply(into: ModelUsage, usage: any): void {
  if (!usage || typeof usage !== "object") return;
  if ("input_tokens" in usage) into.inputTokens = n(usage.input_tokens);
  if ("output_tokens" in usage) into.outputTokens = n(usage.output_tokens);
  if ("cache_creation_input_tokens" in usage) into.cacheCreationTokens = n(usage.cache_creation_input_tokens);
  if ("cache_read_input_tokens" in usage) into.cacheReadTokens = n(usage.cache_read_input_tokens);
}

export function totalTokens(u: Pick<ModelUsage, "inputTokens" | "outputTokens" | "cacheCreationTokens" | "cacheReadTokens">): number {
  return u.inputTokens + u.outputTokens + u.cacheCreationTokens + u.cacheReadTokens;
}

/**
 * Reads the usage out of a response as its bytes pass by: for an event
 * stream, the `message_start` and `message_delta` events; for JSON, the
 * body's `usage`. It only looks at copies of the chunks the gateway has
 * already written on, so it never delays them.
 */
export class UsageTap {
  readonly usage: ModelUsage;
  private pending = "";
  private body: Buffer[] = [];
  private bodyBytes = 0;
  private seen = false;

  constructor(
    private readonly streaming: boolean,
    model: string,
  ) {
    this.usage = emptyUsage(model);
  }

  /** True once a usage report was seen. */
  get found(): boolean {
    return this.seen;
  }

  push(chunk: Buffer): void {
    if (!this.streaming) {
      // JSON answers are small; past 8 MiB there is no usage worth holding the body for.
      if (this.bodyBytes < 8 * 1024 * 1024) {
        this.body.push(chunk);
        this.bodyBytes += chunk.length;
      }
      return;
    }
    this.pending += chunk.toString("utf8");
    let cut: number;
    while ((cut = this.pending.indexOf("\n")) >= 0) {
      const line = this.pending.slice(0, cut);
      this.pending = this.pending.slice(cut + 1);
      if (line.startsWith("data:") && (line.includes('"message_start"') || line.includes('"message_delta"'))) this.event(line.slice(5));
    }
  }

  private event(json: string): void {
    let data: any;
    try {
      data = JSON.parse(json);
    } catch {
      return;
    }
    if (data?.type === "message_start") {
      if (typeof data.message?.model === "string") this.usage.model = data.message.model;
      apply(this.usage, data.message?.usage);
      this.seen = true;
    } else if (data?.type === "message_delta") {
      apply(this.usage, data.usage);
      this.seen = true;
    }
  }

  /** Call when the response has ended; parses a JSON body. */
  finish(): ModelUsage {
    if (!this.streaming && this.body.length) {
      try {
        const data = JSON.parse(Buffer.concat(this.body).toString("utf8"));
        if (typeof data?.model === "string") this.usage.model = data.model;
        if (data?.usage) {
          apply(this.usage, data.usage);
          this.seen = true;
        }
      } catch {
        // not JSON: no usage
      }
      this.body = [];
    }
    return this.usage;
  }
}
