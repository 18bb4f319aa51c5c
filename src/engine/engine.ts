// The engine as the rest of the server sees it: start it, tokenize, generate. Generation runs on the
// engine thread (workers/engine-thread.ts); tokens come back through each request's ring.
import { MessageChannel, type MessagePort, type Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { loadAddon, type ModelInfo, type NativeModel } from '../native.js';
import { createRing, RingReader, RingWriter } from './ring.js';
import { BellListener, createBell, ringBell } from './output-bell.js';
import { readStatus, STATUS_WORDS, type EngineStatus } from './status.js';
import type { EngineCommand, EngineSettings, FinalStats, GenerateParams } from './types.js';
import type { EngineThreadData, EngineThreadMessage } from './thread-protocol.js';
import type { EngineInspection } from './inspection.js';
import { startWorker } from '../threads.js';

/** Where the engine's own messages go (the server passes its logger). */
export type EngineLog = (level: 'info' | 'warn' | 'error', message: string) => void;

const consoleLog: EngineLog = (level, message) => console[level](`pensieve engine: ${message}`);

/**
 * `started`: the request has its place and its cached prefix is known (the rest of its prompt is being
 * computed); then each token's text; then one final record (the only one, when it never started).
 */
export type GenerationEvent =
  | { type: 'started'; cachedPromptTokens: number }
  | { type: 'text'; token: number; text: string }
  | ({ type: 'final' } & FinalStats);

/** A generation's events, and the engine's id for it (as EngineInspection names its requests). */
export interface Generation extends AsyncIterable<GenerationEvent> {
  readonly id: number;
}

const NOTHING_INSPECTED: EngineInspection = { requests: [], memoryPrefixes: [], diskPrefixes: [] };

/** Every slot is busy and the queue is full. */
export class EngineOverloadedError extends Error {
  constructor() {
    super('the server is overloaded: every slot is busy and the queue is full');
    this.name = 'EngineOverloadedError';
  }
}

export class PromptTooLongError extends Error {
  constructor(readonly promptTokens: number, readonly maxTokens: number) {
    super(`prompt is too long: ${promptTokens} tokens > ${maxTokens} maximum`);
    this.name = 'PromptTooLongError';
  }
}

export class Engine {
  private nextId = 1;
  /** Rings of generations not yet ended, to end them with an error if the engine thread dies. */
  private readonly outstanding = new Map<number, SharedArrayBuffer>();
  private readonly doorbell: Int32Array;
  private readonly outputBell: BellListener;
  private readonly statusWords: Int32Array;
  private closed = false;
  /** The answer the engine thread owes to the inspect command sent last. */
  private inspection?: { promise: Promise<EngineInspection>; resolve: (inspection: EngineInspection) => void };

  private constructor(
    readonly settings: EngineSettings,
    /** Facts about the loaded model. */
    readonly model: ModelInfo,
    private readonly vocab: NativeModel,
    private readonly worker: Worker,
    private readonly commands: MessagePort,
    doorbell: SharedArrayBuffer,
    private readonly outputBellBuffer: SharedArrayBuffer,
    status: SharedArrayBuffer,
    private readonly log: EngineLog,
  ) {
    this.doorbell = new Int32Array(doorbell);
    this.outputBell = new BellListener(outputBellBuffer);
    this.statusWords = new Int32Array(status);
  }

  /** Loads the model on a new engine thread; resolves once it is ready to generate. */
  static async start(settings: EngineSettings, log: EngineLog = consoleLog): Promise<Engine> {
    if (!existsSync(settings.modelPath)) throw new Error(`model file not found: ${settings.modelPath}`);
    // The main thread keeps only the vocabulary, to tokenize without a round trip to the engine thread.
    const vocab = new (loadAddon().Model)(settings.modelPath, { vocabOnly: true });
    const channel = new MessageChannel();
    const doorbell = new SharedArrayBuffer(4);
    const outputBell = createBell();
    const status = new SharedArrayBuffer(STATUS_WORDS * 4);
    const data: EngineThreadData = { settings, commands: channel.port2, doorbell, outputBell, status };
    const worker = startWorker('../../workers/engine-thread', import.meta.url, { workerData: data, transferList: [channel.port2] });
    let model: ModelInfo;
    let engineRef: Engine | undefined;
    try {
      worker.on('message', (message: EngineThreadMessage) => {
        if (message.type === 'log') log(message.level, message.message);
        else if (message.type === 'inspection') engineRef?.answerInspection(message.inspection);
      });
      model = await new Promise<ModelInfo>((resolve, reject) => {
        worker.on('message', (message: EngineThreadMessage) => {
          if (message.type === 'ready') resolve(message.model);
        });
        worker.once('error', reject);
        worker.once('exit', (code) => reject(new Error(`engine thread exited during startup (code ${code})`)));
      });
    } catch (err) {
      vocab.free();
      throw err;
    }
    worker.removeAllListeners('exit');
    worker.removeAllListeners('error');
    const engine = new Engine(settings, model, vocab, worker, channel.port1, doorbell, outputBell, status, log);
    engineRef = engine;
    worker.on('error', (err) => engine.onThreadDied(err));
    worker.on('exit', (code) => engine.onThreadDied(new Error(`engine thread exited (code ${code})`)));
    return engine;
  }

  /** Error handler of last resort: the engine thread is gone, so end every open generation here. */
  private onThreadDied(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.log('error', `the engine thread stopped: ${err.stack ?? err.message}`);
    for (const ring of this.outstanding.values()) {
      // The writer is gone, so writing its final record from here cannot race with it.
      new RingWriter(ring).writeFinal({ stopReason: 'error', stopSequenceIndex: -1, promptTokens: 0, cachedPromptTokens: 0, generatedTokens: 0, queueMs: 0, prefillMs: 0, decodeMs: 0 });
    }
    this.outstanding.clear();
    ringBell(new Int32Array(this.outputBellBuffer));
    this.answerInspection(NOTHING_INSPECTED);
  }

  get alive(): boolean {
    return !this.closed;
  }

  tokenize(text: string, options: { addSpecial?: boolean; parseSpecial?: boolean } = {}): Int32Array {
    return this.vocab.tokenize(text, options.addSpecial ?? false, options.parseSpecial ?? true);
  }

  /** The text of tokens; image tokens (negative placeholders: vision-renderer.ts) have none. */
  detokenize(tokens: Int32Array | number[], options: { renderSpecial?: boolean } = {}): string {
    const ids = (tokens instanceof Int32Array ? tokens : Int32Array.from(tokens)).filter((t) => t >= 0);
    return this.vocab.detokenize(ids, options.renderSpecial ?? true);
  }

  status(): EngineStatus {
    return readStatus(this.statusWords);
  }

  /**
   * What the engine thread holds now: its requests' states and the cached prefixes. Answered between steps
   * (after the running one, which may take a while on a long prompt); calls meanwhile share that answer.
   */
  inspect(): Promise<EngineInspection> {
    if (this.closed) return Promise.resolve(NOTHING_INSPECTED);
    if (!this.inspection) {
      let resolve!: (inspection: EngineInspection) => void;
      const promise = new Promise<EngineInspection>((r) => (resolve = r));
      this.inspection = { promise, resolve };
      this.send({ type: 'inspect' });
    }
    return this.inspection.promise;
  }

  private answerInspection(inspection: EngineInspection): void {
    this.inspection?.resolve(inspection);
    this.inspection = undefined;
  }

  /**
   * Generates from a prompt. The events are each generated token's text, then one final record.
   * Aborting the signal cancels the generation (its slot is freed at once); the final record then says
   * `cancelled`. Leaving the loop early cancels it too. Throws PromptTooLongError when the prompt leaves
   * no room to generate within maxContext, EngineOverloadedError when the queue is full. The caller must iterate
   * the result (a generation counts as outstanding until its loop ends).
   */
  generate(prompt: Int32Array | number[], params: GenerateParams, signal?: AbortSignal): Generation {
    if (this.closed) throw new Error('engine is closed');
    const tokens = prompt instanceof Int32Array ? prompt : Int32Array.from(prompt);
    const maxPrompt = this.settings.maxContext - 1;
    if (tokens.length > maxPrompt) throw new PromptTooLongError(tokens.length, maxPrompt);
    if (tokens.length === 0) throw new RangeError('prompt is empty');
    // Checked here, synchronously, so that an HTTP handler can answer 529 before it starts a stream.
    // (The engine thread's scheduler enforces the same bound; this count is never below its own.)
    if (this.outstanding.size >= this.settings.slots + this.settings.queueLength) throw new EngineOverloadedError();
    const id = this.nextId++;
    const ring = createRing(this.settings.ringRecords);
    const reader = new RingReader(ring, this.outputBell, () => this.ring());
    this.outstanding.set(id, ring);
    this.send({ type: 'submit', id, prompt: tokens, params, ring, submittedAt: performance.timeOrigin + performance.now() });
    const onAbort = (): void => this.send({ type: 'cancel', id, abandon: false });
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    const engine = this;
    return {
      id,
      async *[Symbol.asyncIterator]() {
        let ended = false;
        try {
          for await (const record of reader.records()) {
            if (record.kind === 'final') {
              ended = true;
              const { kind: _kind, ...stats } = record;
              yield { type: 'final', ...stats };
            } else if (record.kind === 'started') {
              yield { type: 'started', cachedPromptTokens: record.cachedPromptTokens };
            } else {
              yield { type: 'text', token: record.token, text: record.text };
            }
          }
        } finally {
          signal?.removeEventListener('abort', onAbort);
          engine.outstanding.delete(id);
          if (!ended) engine.send({ type: 'cancel', id, abandon: true });
        }
      },
    };
  }

  /** Stops the engine thread (running generations end as cancelled) and frees the model. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.commands.postMessage({ type: 'shutdown' } satisfies EngineCommand);
    this.ring();
    this.answerInspection(NOTHING_INSPECTED);
    await exited;
    this.vocab.free();
  }

  private send(command: EngineCommand): void {
    if (this.closed) return;
    this.commands.postMessage(command);
    this.ring();
  }

  private ring(): void {
    Atomics.add(this.doorbell, 0, 1);
    Atomics.notify(this.doorbell, 0);
  }
}
