// The prompt cache's file thread: writes cached prefixes to disk and reads them back, so that hashing and
// moving a large KV state (hundreds of MB to GBs for a large model and a long prompt) never holds the
// engine thread. To save, the engine copies a slot's state (it must: the slot may be reused at the next
// step) and hands the copy over; to load, it admits the request and lets it wait for its state, while the
// other sequences run. The thread rings the engine's doorbell when a job ends, and runs waiting loads before
// waiting saves. The copies waiting to be written are bounded (MAX_PENDING_SAVE_BYTES), except that one save
// is always allowed.
import { MessageChannel, receiveMessageOnPort, type MessagePort, type Worker } from 'node:worker_threads';
import { startWorker } from '../threads.js';

export type FileJob =
  | { kind: 'save'; tokens: Int32Array; state: Uint8Array }
  /** Reads `file`, a prefix of `tokens` tokens, for request `id`. */
  | { kind: 'load'; id: number; file: string; tokens: number };

export type LoadResult = { kind: 'load'; id: number; file: string } & ({ state: Uint8Array } | { error: string });

export type FileResult = ({ kind: 'save' } & ({ tokens: Int32Array; file: string; bytes: number } | { error: string })) | LoadResult;

export interface PromptFilesData {
  /** The prompt store's folder for this model. */
  dir: string;
  /** The engine's doorbell: bumped and notified when a job ends. */
  doorbell: SharedArrayBuffer;
  results: MessagePort;
}

/** How long shutdown waits for the jobs in progress. */
const FINISH_TIMEOUT_MS = 60_000;
/**
 * Most bytes of state copies waiting to be written. Several slots are often evicted at once (a burst of
 * requests), and a prefix not saved then is lost; 1 GiB holds a dozen 18k-token prefixes of a 0.5B model,
 * or one of a 7B model.
 */
const MAX_PENDING_SAVE_BYTES = 2 ** 30;

export class PromptFiles {
  /** Started at the first job: an engine that never saves or loads (tests, short runs) starts no thread. */
  private thread?: { worker: Worker; results: MessagePort };
  private readonly doorbell: Int32Array;
  /** The state sizes of the saves in progress, in the order the thread runs them. */
  private readonly pendingSaves: number[] = [];
  private jobs = 0;

  constructor(private readonly dir: string, private readonly doorbellBuffer: SharedArrayBuffer) {
    this.doorbell = new Int32Array(doorbellBuffer);
  }

  private start(): { worker: Worker; results: MessagePort } {
    const channel = new MessageChannel();
    const data: PromptFilesData = { dir: this.dir, doorbell: this.doorbellBuffer, results: channel.port2 };
    const worker = startWorker('../../workers/prompt-files', import.meta.url, { workerData: data, transferList: [channel.port2] });
    return { worker, results: channel.port1 };
  }

  /** Whether a save is in progress. */
  get saveBusy(): boolean {
    return this.pendingSaves.length > 0;
  }

  /** Whether a save of a state of `bytes` bytes may be submitted now. */
  canSave(bytes: number): boolean {
    return this.pendingSaves.length === 0 || this.pendingSaves.reduce((a, b) => a + b, bytes) <= MAX_PENDING_SAVE_BYTES;
  }

  /** Hands a job over; a save's state memory moves to the file thread. */
  submit(job: FileJob): void {
    if (job.kind === 'save') {
      if (!this.canSave(job.state.byteLength)) throw new Error('too many bytes of saves in progress');
      this.pendingSaves.push(job.state.byteLength);
    }
    this.thread ??= this.start();
    this.jobs++;
    this.thread.worker.postMessage(job, job.kind === 'save' ? [job.state.buffer as ArrayBuffer] : []);
  }

  /** A job that ended since the last call, if any. Never blocks. */
  take(): FileResult | undefined {
    const received = this.thread && receiveMessageOnPort(this.thread.results);
    if (!received) return undefined;
    const result = received.message as FileResult;
    this.jobs--;
    if (result.kind === 'save') this.pendingSaves.shift();
    return result;
  }

  /** Waits (blocking this thread) for every job in progress and returns their results. */
  finish(): FileResult[] {
    const results: FileResult[] = [];
    const deadline = performance.now() + FINISH_TIMEOUT_MS;
    while (this.jobs > 0) {
      const bell = Atomics.load(this.doorbell, 0);
      const result = this.take();
      if (result) {
        results.push(result);
        continue;
      }
      const left = deadline - performance.now();
      if (left <= 0) break;
      Atomics.wait(this.doorbell, 0, bell, left);
    }
    return results;
  }

  /** Stops the thread (after finish()). */
  close(): void {
    void this.thread?.worker.terminate();
  }
}
