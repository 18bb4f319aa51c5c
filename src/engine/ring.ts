// Token rings: one per request, in a SharedArrayBuffer, written by the engine thread and read by the
// main thread. The writer never blocks and never overwrites: when a ring is full the engine pauses that
// sequence (it is left out of the next decode steps) until the reader has made room. Writing does not
// wake the reader: the engine rings the shared output bell (output-bell.ts) after writing.
//
// Layout of the SharedArrayBuffer (little-endian, as the host):
//   bytes 0..15   header, four int32 words:
//                   [0] head: records written so far (wraps at 2^32; used = head - tail)
//                   [1] tail: records read so far
//                   [2] writer waiting: 1 while the engine has paused this sequence for room
//                   [3] unused
//   bytes 16..    `capacity` records of 64 bytes each (capacity is a power of two); record i lives
//                 at 16 + (i mod capacity) * 64. Every record starts with int32 `kind`:
//     kind 1, TEXT:  int32 token id at +4 (-1: continues the previous record's text),
//                    int32 byte count n at +8 (0..52), n bytes of UTF-8 at +12.
//                    A token's text longer than 52 bytes spans several records, written together, so a
//                    reader sees all of them or none; each token's text ends on a character boundary.
//     kind 2, FINAL: int32 stop reason at +4 (StopReason codes below), int32 stop sequence index at +8
//                    (-1: none), int32 prompt tokens at +12, int32 cached prompt tokens at +16,
//                    int32 generated tokens at +20, float64 queue ms at +24, prefill ms at +32,
//                    decode ms at +40. It is the last record of a ring.
//     kind 3, STARTED: int32 cached prompt tokens at +4. The request has its place and its cached prefix
//                    is known: the rest of its prompt is being computed. Comes before its first text.
import type { FinalStats, StopReason } from './types.js';
import type { BellListener } from './output-bell.js';

export const RECORD_BYTES = 64;
export const TEXT_BYTES_PER_RECORD = 52;
const HEADER_BYTES = 16;
const HEAD = 0;
const TAIL = 1;
const WRITER_WAITING = 2;
const KIND_TEXT = 1;
const KIND_FINAL = 2;
const KIND_STARTED = 3;

const STOP_REASONS: readonly StopReason[] = ['end_turn', 'max_tokens', 'stop_sequence', 'cancelled', 'overloaded', 'error'];

export function createRing(capacity: number): SharedArrayBuffer {
  if (!Number.isInteger(capacity) || capacity < 2 || (capacity & (capacity - 1)) !== 0) {
    throw new RangeError(`ring capacity must be a power of two >= 2, got ${capacity}`);
  }
  return new SharedArrayBuffer(HEADER_BYTES + capacity * RECORD_BYTES);
}

/** Records needed for a token whose text is `byteLength` bytes long. */
export function recordsForText(byteLength: number): number {
  return Math.max(1, Math.ceil(byteLength / TEXT_BYTES_PER_RECORD));
}

class RingView {
  protected readonly header: Int32Array;
  protected readonly words: Int32Array;
  protected readonly bytes: Buffer;
  protected readonly floats: Float64Array;
  readonly capacity: number;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.header = new Int32Array(buffer, 0, 4);
    this.capacity = (buffer.byteLength - HEADER_BYTES) / RECORD_BYTES;
    this.words = new Int32Array(buffer, HEADER_BYTES);
    this.bytes = Buffer.from(buffer, HEADER_BYTES);
    this.floats = new Float64Array(buffer, HEADER_BYTES);
  }

  protected offsetOf(index: number): number {
    return ((index >>> 0) % this.capacity) * RECORD_BYTES;
  }

  used(): number {
    return (Atomics.load(this.header, HEAD) - Atomics.load(this.header, TAIL)) >>> 0;
  }
}

export class RingWriter extends RingView {
  free(): number {
    return this.capacity - this.used();
  }

  /** Writes one token's text; false (and nothing written) when the ring lacks room for all of it. */
  writeText(token: number, text: Uint8Array): boolean {
    const needed = recordsForText(text.byteLength);
    if (needed > this.free()) return false;
    let index = Atomics.load(this.header, HEAD);
    for (let start = 0, first = true; first || start < text.byteLength; first = false) {
      const n = Math.min(TEXT_BYTES_PER_RECORD, text.byteLength - start);
      const at = this.offsetOf(index++);
      this.words[at >> 2] = KIND_TEXT;
      this.words[(at >> 2) + 1] = first ? token : -1;
      this.words[(at >> 2) + 2] = n;
      this.bytes.set(text.subarray(start, start + n), at + 12);
      start += n;
    }
    this.publish(index);
    return true;
  }

  /** Writes the final record; false when the ring is full. */
  writeFinal(final: FinalStats): boolean {
    if (this.free() < 1) return false;
    const index = Atomics.load(this.header, HEAD);
    const at = this.offsetOf(index);
    const w = at >> 2;
    this.words[w] = KIND_FINAL;
    this.words[w + 1] = STOP_REASONS.indexOf(final.stopReason);
    this.words[w + 2] = final.stopSequenceIndex;
    this.words[w + 3] = final.promptTokens;
    this.words[w + 4] = final.cachedPromptTokens;
    this.words[w + 5] = final.generatedTokens;
    this.floats[(at >> 3) + 3] = final.queueMs;
    this.floats[(at >> 3) + 4] = final.prefillMs;
    this.floats[(at >> 3) + 5] = final.decodeMs;
    this.publish(index + 1);
    return true;
  }

  /** Writes the started record; false when the ring is full. */
  writeStarted(cachedPromptTokens: number): boolean {
    if (this.free() < 1) return false;
    const index = Atomics.load(this.header, HEAD);
    const w = this.offsetOf(index) >> 2;
    this.words[w] = KIND_STARTED;
    this.words[w + 1] = cachedPromptTokens;
    this.publish(index + 1);
    return true;
  }

  /** Marks that the writer is waiting for room; the reader rings the engine's doorbell once it makes some. */
  markWaiting(): void {
    Atomics.store(this.header, WRITER_WAITING, 1);
  }

  private publish(head: number): void {
    Atomics.store(this.header, HEAD, head | 0);
  }
}

export type RingRecord =
  | { kind: 'started'; cachedPromptTokens: number }
  | { kind: 'text'; token: number; text: string }
  | ({ kind: 'final' } & FinalStats);

export class RingReader extends RingView {
  /**
   * `bell` is the output bell the writer rings after writing; `onRoom` is called after the reader made
   * room in a ring whose writer was waiting for it.
   */
  constructor(buffer: SharedArrayBuffer, private readonly bell: BellListener, private readonly onRoom: () => void) {
    super(buffer);
  }

  /** Yields each token's text, then the final record. */
  async *records(): AsyncGenerator<RingRecord, void, undefined> {
    for (;;) {
      // The bell is read before the head: a write after this point changes the bell before it wakes us.
      const bell = this.bell.current();
      let tail = Atomics.load(this.header, TAIL);
      const head = Atomics.load(this.header, HEAD);
      if (head === tail) {
        await this.bell.changedFrom(bell);
        continue;
      }
      // Take every record that is there now; a token's continuation records always come with it.
      const batch: RingRecord[] = [];
      while (tail !== head) {
        const at = this.offsetOf(tail);
        const w = at >> 2;
        if (this.words[w] === KIND_FINAL) {
          batch.push(this.readFinal(at));
          tail = (tail + 1) | 0;
          continue;
        }
        if (this.words[w] === KIND_STARTED) {
          batch.push({ kind: 'started', cachedPromptTokens: this.words[w + 1] });
          tail = (tail + 1) | 0;
          continue;
        }
        const token = this.words[w + 1];
        const parts: Buffer[] = [];
        do {
          const rec = this.offsetOf(tail);
          parts.push(this.bytes.subarray(rec + 12, rec + 12 + this.words[(rec >> 2) + 2]));
          tail = (tail + 1) | 0;
        } while (tail !== head && this.words[this.offsetOf(tail) >> 2] === KIND_TEXT && this.words[(this.offsetOf(tail) >> 2) + 1] === -1);
        batch.push({ kind: 'text', token, text: parts.length === 1 ? parts[0].toString('utf8') : Buffer.concat(parts).toString('utf8') });
      }
      Atomics.store(this.header, TAIL, tail);
      if (Atomics.compareExchange(this.header, WRITER_WAITING, 1, 0) === 1) this.onRoom();
      for (const record of batch) {
        yield record;
        if (record.kind === 'final') return;
      }
    }
  }

  private readFinal(at: number): RingRecord {
    const w = at >> 2;
    const f = at >> 3;
    return {
      kind: 'final',
      stopReason: STOP_REASONS[this.words[w + 1]] ?? 'error',
      stopSequenceIndex: this.words[w + 2],
      promptTokens: this.words[w + 3],
      cachedPromptTokens: this.words[w + 4],
      generatedTokens: this.words[w + 5],
      queueMs: this.floats[f + 3],
      prefillMs: this.floats[f + 4],
      decodeMs: this.floats[f + 5],
    };
  }
}
