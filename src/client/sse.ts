/**
 * An incremental parser for `text/event-stream` bodies, following the WHATWG rules:
 * lines end in LF, CRLF or CR (and a CRLF may be split across two chunks), `:` starts a
 * comment (the server's `: ping` keep-alives), `data:` lines join with "\n", one leading
 * space after the colon is dropped, a blank line ends a frame, and a frame without data is
 * not dispatched. A frame cut off by the end of the body is dropped, never half-delivered.
 */

/** One dispatched server-sent event. */
export interface SseFrame {
  /** The `event:` field, `"message"` when the frame had none. */
  event: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  /** The last `id:` seen on the stream so far (the spec's "last event ID"), if any. */
  id?: string;
}

/** Things a reader may want to know that are not frames. */
export interface SseHooks {
  /** Comment lines, without the leading colon (e.g. `" ping"`). */
  onComment?: (text: string) => void;
  /** A `retry:` field: the server's suggested reconnection delay in milliseconds. */
  onRetry?: (ms: number) => void;
}

export class SseParser {
  private buffer = "";
  /** The previous chunk ended in CR: a LF at the start of the next one belongs to it. */
  private skipLeadingLf = false;
  private started = false;
  private eventType = "";
  private dataLines: string[] = [];
  private hasData = false;
  private lastEventId: string | undefined;

  constructor(private readonly hooks: SseHooks = {}) {}

  /** Feeds decoded text; returns every frame that became complete. */
  push(text: string): SseFrame[] {
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.skipLeadingLf && text.startsWith("\n")) text = text.slice(1);
    this.skipLeadingLf = false;
    this.buffer += text;

    const frames: SseFrame[] = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const ch = this.buffer.charCodeAt(i);
      if (ch !== 10 && ch !== 13) continue;
      const line = this.buffer.slice(start, i);
      if (ch === 13) {
        if (i + 1 < this.buffer.length) {
          if (this.buffer.charCodeAt(i + 1) === 10) i++;
        } else {
          this.skipLeadingLf = true;
        }
      }
      start = i + 1;
      const frame = this.line(line);
      if (frame) frames.push(frame);
    }
    this.buffer = this.buffer.slice(start);
    return frames;
  }

  /** The body ended: a frame without its closing blank line is discarded, as the spec says. */
  end(): void {
    this.buffer = "";
    this.resetFrame();
  }

  /** The spec's "last event ID": what to send as `Last-Event-ID` when reconnecting. */
  get lastId(): string | undefined {
    return this.lastEventId;
  }

  private line(line: string): SseFrame | undefined {
    if (line === "") return this.dispatch();
    if (line.charCodeAt(0) === 58 /* : */) {
      this.hooks.onComment?.(line.slice(1));
      return undefined;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.dataLines.push(value);
        this.hasData = true;
        break;
      case "id":
        // An id containing NUL is ignored, per spec.
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.hooks.onRetry?.(Number(value));
        break;
      default:
        // Unknown fields are ignored.
        break;
    }
    return undefined;
  }

  private dispatch(): SseFrame | undefined {
    if (!this.hasData) {
      this.resetFrame();
      return undefined;
    }
    const frame: SseFrame = {
      event: this.eventType || "message",
      data: this.dataLines.join("\n"),
    };
    if (this.lastEventId !== undefined) frame.id = this.lastEventId;
    this.resetFrame();
    return frame;
  }

  private resetFrame(): void {
    this.eventType = "";
    this.dataLines = [];
    this.hasData = false;
  }
}

/**
 * Reads a response body as SSE frames. Leaving the loop early (break, throw, abort) cancels
 * the body, which closes the connection.
 */
export async function* readSseFrames(
  body: ReadableStream<Uint8Array>,
  hooks: SseHooks = {},
): AsyncGenerator<SseFrame> {
  const parser = new SseParser(hooks);
  // A streaming decoder keeps multi-byte characters that straddle chunks intact.
  const decoder = new TextDecoder("utf-8");
  const reader = body.getReader();
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        for (const frame of parser.push(decoder.decode())) yield frame;
        parser.end();
        return;
      }
      for (const frame of parser.push(decoder.decode(value, { stream: true }))) yield frame;
    }
  } finally {
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
