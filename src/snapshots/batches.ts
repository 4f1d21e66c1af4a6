/**
 * Batches of an archive's many small parts (headers, pieces, padding) for
 * writing to a stream. A restore of 100 MB in 25,600 files writes some 400
 * batches; made new each time they are 100 MB of garbage the collector then
 * pauses for, so a restore fills a few buffers again once each is written.
 */

/** Buffers of one size, handed back once nothing reads them and filled again (output batches, packs). */
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

  /** Whether this is a view of one of its buffers. */
  owns(view: Buffer): boolean {
    return this.mine.has(view.buffer);
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
 * a new buffer its reader may keep. With one, parts are copied into pool
 * buffers as they come, so a part's own buffer may change right after (a
 * pack read into a buffer that is then filled again).
 */
export class Batcher {
  private parts: Buffer[] = [];
  private bytes = 0;
  private current: Buffer | null = null;
  private used = 0;

  constructor(
    private readonly size: number,
    private readonly pool?: BufferPool,
  ) {}

  put(data: Buffer): void {
    if (!this.pool) {
      this.parts.push(data);
      this.bytes += data.length;
      return;
    }
    for (let from = 0; from < data.length; ) {
      if (!this.current || this.used === this.current.length) this.next();
      const copied = data.copy(this.current!, this.used, from);
      this.used += copied;
      this.bytes += copied;
      from += copied;
    }
  }

  /** Where the caller writes `length` bytes next, in order after what was put. */
  room(length: number): { buffer: Buffer; at: number } {
    if (!this.pool || length > this.pool.size) {
      this.close();
      const buffer = Buffer.allocUnsafe(length);
      this.parts.push(buffer);
      this.bytes += length;
      return { buffer, at: 0 };
    }
    if (this.current && this.current.length - this.used < length) this.next();
    if (!this.current) this.next();
    const at = this.used;
    this.used += length;
    this.bytes += length;
    return { buffer: this.current!, at };
  }

  get full(): boolean {
    return this.bytes >= this.size;
  }

  /** What waits, as buffers to write in order (none when nothing waits). */
  take(): Buffer[] {
    this.close();
    const parts = this.parts;
    const bytes = this.bytes;
    this.parts = [];
    this.bytes = 0;
    if (bytes === 0 || this.pool) return parts;
    return [Buffer.concat(parts, bytes)];
  }

  private next(): void {
    this.close();
    this.current = this.pool!.take();
  }

  private close(): void {
    if (this.current && this.used > 0) this.parts.push(this.current.subarray(0, this.used));
    else if (this.current) this.pool!.give(this.current);
    this.current = null;
    this.used = 0;
  }
}
