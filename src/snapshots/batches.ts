/**
 * Batches of an archive's many small parts (headers, pieces, padding) for
 * writing to a stream. A restore of 100 MB in 25,600 files writes some 400
 * batches; made new each time they are 100 MB of garbage the collector then
 * pauses for, so a restore fills a few buffers again once each is written.
 */

/** Output buffers handed back once a stream has taken their bytes. */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly mine = new WeakSet<ArrayBufferLike>();

  constructor(
    readonly size: number,
    private readonly keep: number,
  ) {}

  take(): Buffer {
    const buffer = this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
    this.mine.add(buffer.buffer);
    return buffer;
  }

  /** Takes back a view of one of its buffers (anything else is left alone); only once nothing reads it. */
  give(view: Buffer): void {
    if (!this.mine.has(view.buffer) || this.free.length >= this.keep) return;
    this.mine.delete(view.buffer);
    this.free.push(Buffer.from(view.buffer, 0, this.size));
  }
}

/**
 * Gathers parts until about `size` bytes wait. Without a pool each batch is
 * a new buffer its reader may keep; with one, small parts are copied into
 * pool buffers and a part of half a buffer or more goes out as it is (a view
 * of data that does not change, such as a pack).
 */
export class Batcher {
  private parts: Buffer[] = [];
  private bytes = 0;

  constructor(
    private readonly size: number,
    private readonly pool?: BufferPool,
  ) {}

  put(data: Buffer): void {
    this.parts.push(data);
    this.bytes += data.length;
  }

  get full(): boolean {
    return this.bytes >= this.size;
  }

  /** What waits, as buffers to write in order (none when nothing waits). */
  take(): Buffer[] {
    const parts = this.parts;
    const bytes = this.bytes;
    this.parts = [];
    this.bytes = 0;
    if (bytes === 0) return [];
    if (!this.pool) return [Buffer.concat(parts, bytes)];
    const pool = this.pool;
    const out: Buffer[] = [];
    let current: Buffer | null = null;
    let used = 0;
    const close = () => {
      if (current && used > 0) out.push(current.subarray(0, used));
      else if (current) pool.give(current);
      current = null;
      used = 0;
    };
    for (const part of parts) {
      if (part.length >= pool.size / 2) {
        close();
        out.push(part);
        continue;
      }
      if (current && used + part.length > pool.size) close();
      current ??= pool.take();
      used += part.copy(current, used);
    }
    close();
    return out;
  }
}
