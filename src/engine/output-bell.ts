// The output bell: one Int32 word in a SharedArrayBuffer that the engine thread bumps (and notifies)
// when rings have new records. The main thread waits on this one word instead of one word per ring, so
// a decode step that writes into N rings costs one cross-thread wake-up, not N; and the engine rings it
// at most every `stream_interval_ms` (first tokens and final records at once), which bounds the
// wake-ups of the main thread while many sequences stream.

export function createBell(): SharedArrayBuffer {
  return new SharedArrayBuffer(4);
}

/** Bumps the bell and wakes its listener. */
export function ringBell(words: Int32Array): void {
  Atomics.add(words, 0, 1);
  Atomics.notify(words, 0);
}

/** The main thread's side: every reader waits on the same pending `Atomics.waitAsync`. */
export class BellListener {
  private readonly words: Int32Array;
  private pending: { value: number; changed: Promise<unknown> } | undefined;

  constructor(buffer: SharedArrayBuffer) {
    this.words = new Int32Array(buffer);
  }

  /** The bell's value; read it before looking at a ring, then wait for a change from it. */
  current(): number {
    return Atomics.load(this.words, 0);
  }

  async changedFrom(value: number): Promise<void> {
    while (Atomics.load(this.words, 0) === value) {
      if (this.pending?.value !== value) {
        const wait = Atomics.waitAsync(this.words, 0, value);
        this.pending = { value, changed: wait.async ? wait.value : Promise.resolve() };
      }
      await this.pending.changed;
    }
  }
}
