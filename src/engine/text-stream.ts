// Turns a sequence's token bytes into text that is safe to emit: never a UTF-8 character cut in two,
// never any part of a stop sequence. Text that could still turn out to begin a stop sequence is held
// back until the next tokens decide it.

const decoder = new TextDecoder('utf-8');

/** Length of the longest prefix of `bytes` that ends on a UTF-8 character boundary. */
export function completeUtf8Length(bytes: Uint8Array): number {
  const n = bytes.length;
  // A character is at most 4 bytes: look back at most 3 bytes for a lead byte still missing continuations.
  for (let back = 1; back <= Math.min(3, n); back++) {
    const b = bytes[n - back];
    if ((b & 0xc0) === 0x80) continue; // a continuation byte: keep looking for its lead
    const length = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return length > back ? n - back : n;
  }
  return n;
}

export interface TextChunk {
  /** Text that may be emitted now. */
  text: string;
  /** Index of the stop sequence that matched (the text before it is in `text`), or -1. */
  stopIndex: number;
}

export class TextStream {
  private pendingBytes = new Uint8Array(0);
  private held = '';
  private readonly maxStopLength: number;

  constructor(private readonly stopSequences: readonly string[] = []) {
    this.maxStopLength = Math.max(0, ...stopSequences.map((s) => s.length));
  }

  /** Adds one token's bytes; returns what can be emitted. */
  push(bytes: Uint8Array): TextChunk {
    let all = bytes;
    if (this.pendingBytes.length > 0) {
      all = new Uint8Array(this.pendingBytes.length + bytes.length);
      all.set(this.pendingBytes);
      all.set(bytes, this.pendingBytes.length);
    }
    const complete = completeUtf8Length(all);
    this.pendingBytes = all.slice(complete);
    return this.release(decoder.decode(all.subarray(0, complete)));
  }

  /** At the end of generation: everything still held (a dangling partial character becomes U+FFFD). */
  finish(): string {
    const rest = this.held + (this.pendingBytes.length > 0 ? decoder.decode(this.pendingBytes) : '');
    this.held = '';
    this.pendingBytes = new Uint8Array(0);
    return rest;
  }

  private release(text: string): TextChunk {
    if (this.maxStopLength === 0) return { text, stopIndex: -1 };
    const searchFrom = this.held.length;
    const held = this.held + text;
    let stopAt = -1;
    let stopIndex = -1;
    this.stopSequences.forEach((stop, i) => {
      if (stop.length === 0) return;
      // Only matches that end inside the new text are new.
      const at = held.indexOf(stop, Math.max(0, searchFrom - stop.length + 1));
      if (at >= 0 && (stopAt < 0 || at < stopAt)) {
        stopAt = at;
        stopIndex = i;
      }
    });
    if (stopIndex >= 0) {
      this.held = '';
      return { text: held.slice(0, stopAt), stopIndex };
    }
    const keep = this.heldSuffixLength(held);
    this.held = held.slice(held.length - keep);
    return { text: held.slice(0, held.length - keep), stopIndex: -1 };
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop sequence. */
  private heldSuffixLength(text: string): number {
    for (let len = Math.min(text.length, this.maxStopLength - 1); len > 0; len--) {
      const suffix = text.slice(text.length - len);
      if (this.stopSequences.some((stop) => stop.startsWith(suffix))) return len;
    }
    return 0;
  }
}
