// Writing the engine's records into the requests' rings. A record the ring has no room for waits in the
// sequence's backlog, and the sequence is paused until its reader makes room: the engine never blocks on a
// reader and never drops a token. Writing does not wake the readers: the output bell does, at most every
// streamIntervalMs, and at once for a first token or an end (output-bell.ts).
import { ringBell } from './output-bell.js';
import type { OutputRecord, Sequence } from './sequence.js';

const now = (): number => performance.timeOrigin + performance.now();

export class SequenceOutput {
  /** Records written since the bell last rang, and whether one of them must go out at once. */
  private unannounced = false;
  private urgent = false;
  private lastAnnounced = 0;
  /** Ended sequences whose last records still wait for room in their ring. */
  private readonly draining = new Set<Sequence>();

  constructor(
    private readonly bell: Int32Array,
    private readonly intervalMs: number,
    /** Leaves a sequence out of steps while its backlog waits, or lets it back in. */
    private readonly setPaused: (id: number, paused: boolean) => void,
  ) {}

  emit(seq: Sequence, record: OutputRecord): void {
    this.unannounced = true;
    // A start, a first token (time to first token) and an end (the slot is free) are not held back.
    if (!('token' in record) || seq.generated === 1) this.urgent = true;
    if (seq.backlog.length === 0 && this.write(seq, record)) return;
    seq.backlog.push(record);
    seq.ring.markWaiting();
    this.setPaused(seq.id, true);
  }

  /** After a sequence's final record: what its ring had no room for is written later. */
  ended(seq: Sequence): void {
    if (seq.backlog.length > 0) this.draining.add(seq);
  }

  /** Its reader is gone: records still waiting for it are dropped. */
  abandon(id: number): void {
    for (const seq of this.draining) if (seq.id === id) this.draining.delete(seq);
  }

  /** Writes waiting records where rings now have room; running sequences whose backlog is out go on. */
  drain(running: Iterable<Sequence>): void {
    for (const seq of running) if (seq.backlog.length > 0 && this.drainOne(seq)) this.setPaused(seq.id, false);
    for (const seq of this.draining) if (this.drainOne(seq)) this.draining.delete(seq);
  }

  /** Rings the output bell when something waits for it and it is due (or `force`). */
  announce(force: boolean): void {
    if (!this.unannounced) return;
    const at = now();
    if (!force && !this.urgent && at - this.lastAnnounced < this.intervalMs) return;
    ringBell(this.bell);
    this.unannounced = this.urgent = false;
    this.lastAnnounced = at;
  }

  private write(seq: Sequence, record: OutputRecord): boolean {
    if ('token' in record) return seq.ring.writeText(record.token, record.text);
    return 'stopReason' in record ? seq.ring.writeFinal(record) : seq.ring.writeStarted(record.cachedPromptTokens);
  }

  /** True when nothing is left waiting. */
  private drainOne(seq: Sequence): boolean {
    while (seq.backlog.length > 0) {
      if (!this.write(seq, seq.backlog[0])) {
        seq.ring.markWaiting();
        return false;
      }
      seq.backlog.shift();
      this.unannounced = true;
    }
    return true;
  }
}
