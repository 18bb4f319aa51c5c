// The prompt saver: writes cached prefixes to disk on a thread of its own, so that hashing and writing a
// large KV state (hundreds of MB to GBs for a large model and a long prompt) never holds the engine
// thread. The engine copies a slot's state (it must: the slot may be reused at the next step), hands the
// copy over, and goes on; the saver rings the engine's doorbell when the file is written. One save at a
// time, so that at most one state copy is held in memory.
import { MessageChannel, receiveMessageOnPort, type MessagePort, type Worker } from 'node:worker_threads';
import { startWorker } from '../threads.js';

export interface SaveJob {
  tokens: Int32Array;
  state: Uint8Array;
  slot: number;
  slots: number;
}

export type SaveResult = { tokens: Int32Array; file: string; bytes: number } | { tokens: Int32Array; error: string };

export interface PromptSaverData {
  /** The prompt store's folder for this model. */
  dir: string;
  /** The engine's doorbell: bumped and notified when a save ends. */
  doorbell: SharedArrayBuffer;
  results: MessagePort;
}

/** How long shutdown waits for a save in progress. */
const FINISH_TIMEOUT_MS = 60_000;

export class PromptSaver {
  /** Started at the first save: an engine that never saves (tests, short runs) starts no thread. */
  private thread?: { worker: Worker; results: MessagePort };
  private readonly doorbell: Int32Array;
  private inFlight = false;

  constructor(private readonly dir: string, private readonly doorbellBuffer: SharedArrayBuffer) {
    this.doorbell = new Int32Array(doorbellBuffer);
  }

  private start(): { worker: Worker; results: MessagePort } {
    const channel = new MessageChannel();
    const data: PromptSaverData = { dir: this.dir, doorbell: this.doorbellBuffer, results: channel.port2 };
    const worker = startWorker('../../workers/prompt-saver', import.meta.url, { workerData: data, transferList: [channel.port2] });
    return { worker, results: channel.port1 };
  }

  /** Whether a save is in progress (then save() must wait). */
  get busy(): boolean {
    return this.inFlight;
  }

  /** Hands a state over to be written; `state`'s memory moves to the saver thread. */
  save(job: SaveJob): void {
    if (this.inFlight) throw new Error('a save is already in progress');
    this.thread ??= this.start();
    this.inFlight = true;
    this.thread.worker.postMessage(job, [job.state.buffer as ArrayBuffer]);
  }

  /** The save that ended since the last call, if any. Never blocks. */
  take(): SaveResult | undefined {
    const received = this.thread && receiveMessageOnPort(this.thread.results);
    if (!received) return undefined;
    this.inFlight = false;
    return received.message as SaveResult;
  }

  /** Waits (blocking this thread) for the save in progress, if any, and returns its result. */
  finish(): SaveResult | undefined {
    const deadline = performance.now() + FINISH_TIMEOUT_MS;
    while (this.inFlight) {
      const bell = Atomics.load(this.doorbell, 0);
      const result = this.take();
      if (result) return result;
      const left = deadline - performance.now();
      if (left <= 0) return { tokens: new Int32Array(0), error: 'the save in progress did not end in time' };
      Atomics.wait(this.doorbell, 0, bell, left);
    }
    return undefined;
  }

  /** Stops the saver thread (after finish()). */
  close(): void {
    void this.thread?.worker.terminate();
  }
}
