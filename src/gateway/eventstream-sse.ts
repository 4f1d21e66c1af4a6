import { EventStreamCodec } from "@smithy/eventstream-codec";
import { fromUtf8, toUtf8 } from "@smithy/util-utf8";

const codec = new EventStreamCodec(toUtf8, fromUtf8);

/** No Bedrock event comes near this; a bigger length is a broken or hostile stream. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/**
 * Turns Bedrock's binary event stream (application/vnd.amazon.eventstream)
 * into the Messages API's server-sent events, which is what the CLI reads:
 * each `chunk` event carries one Messages API event, base64-encoded; an
 * exception becomes an `error` event.
 */
export class EventStreamToSse {
  private pending: Buffer = Buffer.alloc(0);
  failed = false;

  /** The SSE text for the messages completed by this chunk. */
  push(chunk: Buffer): string {
    if (this.failed) return "";
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let out = "";
    while (this.pending.length >= 4) {
      const total = this.pending.readUInt32BE(0);
      if (total < 16 || total > MAX_MESSAGE_BYTES) return out + this.fail("The model API sent a malformed event stream.");
      if (this.pending.length < total) break;
      const frame = this.pending.subarray(0, total);
      this.pending = this.pending.subarray(total);
      let message;
      try {
        message = codec.decode(frame);
      } catch {
        return out + this.fail("The model API sent a corrupt event (checksum or header).");
      }
      out += this.convert(message.headers, message.body);
      if (this.failed) return out;
    }
    return out;
  }

  /** Whatever is left when the stream ends: a cut message is an error the CLI can see. */
  end(): string {
    if (this.failed || this.pending.length === 0) return "";
    return this.fail("The model API's event stream ended in the middle of an event.");
  }

  private convert(headers: Record<string, { type: string; value: unknown }>, body: Uint8Array): string {
    const kind = String(headers[":message-type"]?.value ?? "");
    const type = String(headers[":event-type"]?.value ?? headers[":exception-type"]?.value ?? "");
    const text = toUtf8(body);
    if (kind === "event" && type === "chunk") {
      let event: { type?: unknown } | undefined;
      try {
        const bytes = (JSON.parse(text) as { bytes?: unknown }).bytes;
        event = typeof bytes === "string" ? JSON.parse(Buffer.from(bytes, "base64").toString("utf8")) : undefined;
      } catch {
        event = undefined;
      }
      if (!event || typeof event.type !== "string" || !/^[a-z_]+$/.test(event.type)) return this.fail("The model API sent an event that is not a Messages API event.");
      return `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
    }
    if (kind === "exception" || kind === "error") {
      let message = type || "error";
      try {
        const parsed = JSON.parse(text) as { message?: unknown };
        if (typeof parsed.message === "string") message = `${type}: ${parsed.message}`;
      } catch {
        // the type alone
      }
      return this.fail(message, /throttl/i.test(type) ? "rate_limit_error" : /overload|unavailable/i.test(type) ? "overloaded_error" : "api_error");
    }
    return "";
  }

  private fail(message: string, type = "api_error"): string {
    this.failed = true;
    this.pending = Buffer.alloc(0);
    return `event: error\ndata: ${JSON.stringify({ type: "error", error: { type, message } })}\n\n`;
  }
}
