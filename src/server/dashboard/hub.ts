// Pushes one snapshot a second to every open dashboard page. The timer runs only while at least one page is
// connected, and each tick builds the snapshot once for all of them: with no page open, nothing is built.

/** Sends a serialized snapshot to a page; resolves once written (a page still writing the last one skips frames). */
export type SnapshotClient = (frame: string) => void | Promise<void>;

export class SnapshotHub {
  private readonly clients = new Set<SnapshotClient>();
  private timer?: NodeJS.Timeout;
  private building = false;
  /** Clients still writing an earlier frame: they skip this one. */
  private readonly busy = new WeakSet<SnapshotClient>();

  constructor(
    private readonly build: () => Promise<string>,
    private readonly intervalMs = 1000,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  get size(): number {
    return this.clients.size;
  }

  /** Adds a page; it gets a snapshot at once, then every interval. Returns its removal. */
  add(client: SnapshotClient): () => void {
    this.clients.add(client);
    this.timer ??= setInterval(() => void this.tick(), this.intervalMs);
    void this.tick();
    return () => {
      this.clients.delete(client);
      if (this.clients.size === 0) this.stop();
    };
  }

  /** Drops every page (the server is closing). */
  stop(): void {
    this.clients.clear();
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async tick(): Promise<void> {
    if (this.building || this.clients.size === 0) return; // a build slower than the interval skips a tick
    this.building = true;
    try {
      const frame = await this.build();
      for (const client of this.clients) {
        if (this.busy.has(client)) continue;
        this.busy.add(client);
        Promise.resolve(client(frame)).catch(this.onError).finally(() => this.busy.delete(client));
      }
    } catch (err) {
      this.onError(err);
    } finally {
      this.building = false;
    }
  }
}
