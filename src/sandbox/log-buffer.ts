/** One line a sandboxed process wrote. */
export interface SandboxLogLine {
  /** Epoch milliseconds when the line was complete. */
  at: number;
  /** "claude" for the CLI's stderr, "exec" for commands run with exec(). */
  source: "claude" | "exec" | "server";
  stream: "stdout" | "stderr";
  line: string;
}

const MAX_LINE_CHARS = 4096;

/** Keeps the last `capacity` lines; older ones fall off. */
export class LogBuffer {
  private readonly lines: SandboxLogLine[] = [];

  constructor(private readonly capacity = 1000) {}

  push(entry: SandboxLogLine): void {
    const line = entry.line.length > MAX_LINE_CHARS ? `${entry.line.slice(0, MAX_LINE_CHARS)}…` : entry.line;
    this.lines.push({ ...entry, line });
    if (this.lines.length > this.capacity) this.lines.splice(0, this.lines.length - this.capacity);
  }

  /** The most recent `limit` lines, oldest first. */
  recent(limit = this.capacity): SandboxLogLine[] {
    return this.lines.slice(-Math.max(0, limit));
  }

  /** A writer that splits a byte stream into lines for this buffer. */
  writer(source: SandboxLogLine["source"], stream: SandboxLogLine["stream"]): { write(chunk: Buffer): void; end(): void } {
    let partial = "";
    return {
      write: (chunk) => {
        partial += chunk.toString("utf8");
        if (partial.length > MAX_LINE_CHARS * 4 && !partial.includes("\n")) {
          this.push({ at: Date.now(), source, stream, line: partial });
          partial = "";
          return;
        }
        const parts = partial.split("\n");
        partial = parts.pop() ?? "";
        for (const line of parts) this.push({ at: Date.now(), source, stream, line: line.replace(/\r$/, "") });
      },
      end: () => {
        if (partial) this.push({ at: Date.now(), source, stream, line: partial });
        partial = "";
      },
    };
  }
}
