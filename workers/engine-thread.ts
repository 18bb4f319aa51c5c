// The engine thread: the one thread that owns the llama.cpp model and context. It runs a tight loop:
// take commands, ask the scheduler for a step plan, run it as ONE llama_decode batch (the next token of
// every generating sequence plus prompt chunks), sample, and write each sequence's text into its ring.
// It calls the addon synchronously; when there is nothing to compute it sleeps on the doorbell.
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { loadAddon, type ModelInfo, type NativeContext } from '../src/native.js';
import { Scheduler, type DecodeEntry, type Placement, type PrefillEntry, type StepPlan } from '../src/engine/scheduler.js';
import { RingWriter } from '../src/engine/ring.js';
import { TextStream } from '../src/engine/text-stream.js';
import { commonPrefixLength, SlotPrefixCache } from '../src/engine/prefix-cache.js';
import type { EngineCommand, EngineSettings, FinalStats, GenerateParams, StopReason } from '../src/engine/types.js';
import { STATUS_WORDS, StatusWord } from '../src/engine/status.js';
import { ringBell } from '../src/engine/output-bell.js';
import { modelFingerprint, PromptStore, type StoredPrefix } from '../src/engine/prompt-store.js';
import { PromptFiles, type FileResult, type LoadResult } from '../src/engine/prompt-files.js';

export interface EngineThreadData {
  settings: EngineSettings;
  commands: MessagePort;
  /** Int32 word 0 is bumped (and notified) whenever the engine has something new to look at. */
  doorbell: SharedArrayBuffer;
  /** The output bell (src/engine/output-bell.ts), rung after writing into rings. */
  outputBell: SharedArrayBuffer;
  /** Int32 words updated every step, read by the main thread (see StatusWord). */
  status: SharedArrayBuffer;
}

/** Messages to the main thread. */
export type EngineThreadMessage =
  | { type: 'ready'; model: ModelInfo; context: ReturnType<NativeContext['info']> }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string };

function post(message: EngineThreadMessage): void {
  parentPort!.postMessage(message);
}

const log = (message: string, level: 'info' | 'warn' | 'error' = 'warn'): void => post({ type: 'log', level, message });

const now = (): number => performance.timeOrigin + performance.now();

/** A request from submission to its last record. */
interface Sequence {
  id: number;
  prompt: Int32Array;
  params: GenerateParams;
  maxTokens: number;
  ring: RingWriter;
  text: TextStream;
  /** Special tokens whose text this request shows. */
  shownSpecial: Set<number>;
  slot: number;
  /** Records the ring had no room for yet; while any are here, the sequence is paused. */
  backlog: Array<{ token: number; text: Uint8Array } | FinalStats>;
  lastToken: number;
  generated: number;
  /** Every generated token (the KV cache holds the prompt, then these but the last). */
  output: number[];
  /** Tokens of prompt + output whose KV state is computed, in its slot. */
  computed: number;
  /** Prompt tokens that were already in the slot (a cached prefix). */
  cached: number;
  /** While preempted: its KV state, out of the pool. */
  setAside?: Buffer;
  submittedAt: number;
  admittedAt: number;
  firstTokenAt: number;
  done: boolean;
}

const { settings, commands, doorbell: doorbellBuffer, outputBell: outputBellBuffer, status: statusBuffer } = workerData as EngineThreadData;
const addon = loadAddon();
// With huge pages, the model is read into memory that can have them: the file's mmap cannot.
const hugePages = addon.useHugePages(settings.hugePages);
const model = new addon.Model(settings.modelPath, { gpuLayers: settings.gpuLayers, mmap: !hugePages });
// One pool of KV cells for every slot (llama.cpp's unified KV cache): any sequence may grow to maxContext
// while the others are short, and a prefix copied between slots shares its cells.
const context: NativeContext = new addon.Context(model, {
  contextSize: settings.poolTokens,
  batchSize: settings.batchSize,
  ubatchSize: settings.ubatchSize,
  sequences: settings.slots,
  threads: settings.threads,
  kvUnified: true,
  kvType: settings.kvType,
  flashAttention: ({ off: 0, on: 1, auto: -1 } as const)[settings.flashAttention],
});
/** A slot's KV state, as saved (llama_state_seq_get_data), holds the pool's one stream. */
const STREAM = { slot: 0, slots: 1 };
/** Whether the whole model runs on a GPU, where a step's cost barely grows with its tokens. */
const wholeModelOnGpu = context.info().wholeModelOnGpu;
const pieces = model.tokenPieces();
const slidingWindow = model.info().slidingWindow;
const eogTokens = model.info().eogTokens;
const endOfGeneration = new Set(eogTokens);
/**
 * Shorter prefixes are computed rather than waited for (from a running request that is computing them)
 * or read from disk, are not saved to disk, and count as none when a request is placed (see prefix-cache.ts).
 */
const MIN_SHARED_TOKENS = 256;
const prefixCache = new SlotPrefixCache(settings.slots, MIN_SHARED_TOKENS);
const scheduler = new Scheduler({
  slots: settings.slots,
  poolCells: context.info().contextSize,
  reclaimOrder: (freeSlots) => prefixCache.reclaimOrder(freeSlots),
  stepTokenBudget: settings.stepTokenBudget,
  queueLength: settings.queueLength,
  place: (request, freeSlots, running) => place(request.id, freeSlots, running),
  fillCompletingSteps: wholeModelOnGpu,
});

const promptStore = settings.promptCache
  ? new PromptStore(settings.promptCache.folder, modelFingerprint(settings.modelPath), settings.promptCache.maxBytes, log)
  : undefined;
const promptFiles = promptStore ? new PromptFiles(promptStore.dir, doorbellBuffer) : undefined;
/** Saved prefixes being loaded for requests waiting in their slots, by request id. */
const loads = new Map<number, { entry: StoredPrefix; slot: number; tokens: number }>();
/** Per slot: the held tokens last saved to the prompt store (the same array as the prefix cache's). */
const persisted: Array<Int32Array | undefined> = new Array(settings.slots);

/**
 * The free slot with the longest cached prefix; better, a running request that shares more (its KV state
 * is copied once computed), or better still, a saved prefix that shares more (loaded into the slot by the
 * file thread while the request waits there).
 */
function place(id: number, freeSlots: readonly number[], running: readonly number[]): Placement {
  const prompt = sequences.get(id)!.prompt;
  const placement = prefixCache.place(prompt, freeSlots);
  if (!windowKept(placement.slot, placement.cached)) placement.cached = 0;
  let donor: Placement['donor'];
  // No donors with sliding windows: the donor's window moves on while the copy waits.
  for (const other of slidingWindow > 0 ? [] : running) {
    const shared = commonPrefixLength(sequences.get(other)!.prompt, prompt);
    if (shared >= placement.cached + MIN_SHARED_TOKENS && shared > (donor?.tokens ?? 0)) donor = { id: other, tokens: shared };
  }
  const stored = promptStore?.longest(prompt);
  if (stored && stored.shared >= Math.max(placement.cached, donor?.tokens ?? 0) + MIN_SHARED_TOKENS) {
    loads.set(id, { entry: stored.entry, slot: placement.slot, tokens: stored.shared });
    promptFiles!.submit({ kind: 'load', id, file: stored.entry.file, tokens: stored.entry.tokens.length, slots: STREAM.slots });
    return { slot: placement.slot, cached: 0, loading: stored.shared };
  }
  return { ...placement, donor };
}

/**
 * Whether the slot, cut back to its first `tokens` positions, still holds what its next position attends
 * to: sliding-window layers keep only the window's cells (llama-server makes the same check).
 */
function windowKept(slot: number, tokens: number): boolean {
  return slidingWindow === 0 || tokens === 0 || context.seqPosMin(slot) <= Math.max(0, tokens - slidingWindow);
}

/**
 * A load ended: its state goes into the slot of the request that waits for it (computed cold instead when
 * the file failed a check or llama.cpp refused the state). A request cancelled meanwhile left its slot, so
 * its state is dropped.
 */
function applyLoad(result: LoadResult): void {
  const load = loads.get(result.id);
  if (!load) return;
  loads.delete(result.id);
  const seq = sequences.get(result.id);
  const state = 'state' in result ? result.state : undefined;
  if (!state) promptStore!.discard(load.entry.file, 'error' in result ? result.error : 'no state');
  if (!seq || seq.slot !== load.slot || !scheduler.isLoading(seq.id)) return;
  // The slot's prefix-cache record is written when the request leaves it (finish), not here. The whole
  // stored prefix goes into the pool before its tail is dropped: without room for it, it is computed cold.
  const room = load.entry.tokens.length <= scheduler.pool.free;
  const kept = Math.min(load.tokens, seq.prompt.length - 1);
  const set = state !== undefined && room && context.seqStateSet(load.slot, state);
  if (state && room && !set) promptStore!.discard(load.entry.file, 'llama.cpp could not load its KV state');
  if (set && context.seqRemove(load.slot, kept, -1) && windowKept(load.slot, kept)) {
    promptStore!.touch(load.entry);
    Atomics.add(status, StatusWord.CachedPromptTokens, kept);
    seq.cached = seq.computed = kept;
    scheduler.loaded(seq.id, kept);
    return;
  }
  // Computed cold, in an emptied slot.
  context.seqRemove(load.slot, -1, -1);
  scheduler.loaded(seq.id, 0);
}

/** Whether the slot holds a prefix worth saving that is not on disk yet. */
function unsaved(slot: number): boolean {
  const held = prefixCache.heldBy(slot);
  return promptStore !== undefined && persisted[slot] !== held && held.length >= MIN_SHARED_TOKENS;
}

/** A free slot holding a prefix worth saving that is not on disk yet; -1 when there is none. */
function unsavedSlot(): number {
  for (let slot = 0; slot < settings.slots; slot++) if (unsaved(slot) && !scheduler.isBusy(slot)) return slot;
  return -1;
}

/** Saves the slot's prefix: hands a copy of its state to the file thread, or (`now`) writes it on this thread. */
function saveSlot(slot: number, now = false): void {
  const held = prefixCache.heldBy(slot);
  persisted[slot] = held;
  const state = context.seqStateGet(slot);
  if (now) promptStore!.save(held, state, STREAM.slot, STREAM.slots);
  else promptFiles!.submit({ kind: 'save', tokens: held, state, ...STREAM });
}

/** Saves one free slot's prefix that is not on disk yet (see saveSlot); false when there was none. */
function persistOne(now = false): boolean {
  const slot = unsavedSlot();
  if (slot < 0) return false;
  saveSlot(slot, now);
  return true;
}

/**
 * Before a slot's contents are replaced by ones sharing only their first `kept` tokens: saves its prefix
 * if that loses a useful part not on disk yet, and the saves in progress leave room for its copy. While
 * requests keep coming, the engine is never idle for the idle-time saves, and an evicted prefix would have to
 * be computed again.
 */
function saveBeforeEviction(slot: number, kept: number): void {
  if (!unsaved(slot) || prefixCache.heldBy(slot).length - kept < MIN_SHARED_TOKENS) return;
  if (promptFiles!.canSave(context.seqStateSize(slot))) saveSlot(slot);
}

/** A job the file thread finished: a saved prefix is indexed (or why not logged), a load applied. */
function fileJobDone(result: FileResult): void {
  if (result.kind === 'load') applyLoad(result);
  else if ('error' in result) log(`prompt cache: not saved: ${result.error}`);
  else promptStore!.add(result.file, result.tokens, result.bytes);
}

/**
 * How long the engine stays idle before it saves a prefix: a save still copies the slot's state on this
 * thread (and the file thread's hashing and writing compete with decoding for the cores), and a client's next
 * turn often comes right after the last one ended, extending the prefix that would have been saved.
 */
const PERSIST_AFTER_IDLE_MS = 1000;
/** When the engine last ran a step. */
let lastStepAt = 0;

const doorbell = new Int32Array(doorbellBuffer);
const outputBell = new Int32Array(outputBellBuffer);
const status = new Int32Array(statusBuffer, 0, STATUS_WORDS);
const encoder = new TextEncoder();

const sequences = new Map<number, Sequence>();
/** Finished sequences whose last records still wait for room in their ring. */
const draining = new Set<Sequence>();

// The batch arrays, reused every step.
const batchTokens = new Int32Array(settings.batchSize);
const batchPositions = new Int32Array(settings.batchSize);
const batchSeqIds = new Int32Array(settings.batchSize);
const sampleAt = new Int32Array(settings.slots);
const sampled = new Int32Array(settings.slots);
const sampledFor: Sequence[] = new Array(settings.slots);

/**
 * Whether a step's tokens are published (text, stop sequences, rings) while the next step computes. Only
 * worth it when llama_decode returns before the step is done (the whole model on a GPU); elsewhere it would
 * only hold every token back by one step.
 */
const overlapSteps = settings.overlapSteps ?? wholeModelOnGpu;

/** Tokens taken from a step and not yet published: two lists, one filling while the other is published. */
class TakenTokens {
  readonly seqs: Sequence[] = new Array(settings.slots);
  readonly tokens = new Int32Array(settings.slots);
  count = 0;

  add(seq: Sequence, token: number): void {
    this.seqs[this.count] = seq;
    this.tokens[this.count++] = token;
  }

  publishAll(): void {
    for (let i = 0; i < this.count; i++) publish(this.seqs[i], this.tokens[i]);
    this.seqs.fill(undefined as unknown as Sequence, 0, this.count);
    this.count = 0;
  }
}
let unpublished = new TakenTokens();
let spareTokens = new TakenTokens();

const nothing = new Uint8Array(0);

/** Records written since the output bell last rang, and whether one of them must go out at once. */
let unannounced = false;
let urgent = false;
let lastAnnounced = 0;

/** Rings the output bell when something waits for it and it is due (see output-bell.ts). */
function announce(force: boolean): void {
  if (!unannounced) return;
  const at = now();
  if (!force && !urgent && at - lastAnnounced < settings.streamIntervalMs) return;
  ringBell(outputBell);
  unannounced = urgent = false;
  lastAnnounced = at;
}

function pieceOf(seq: Sequence, token: number): Uint8Array {
  if (pieces.special[token] && !seq.shownSpecial.has(token)) return nothing;
  return pieces.bytes.subarray(pieces.offsets[token], pieces.offsets[token + 1]);
}

function emit(seq: Sequence, record: { token: number; text: Uint8Array } | FinalStats): void {
  unannounced = true;
  // A first token (time to first token) and an end (the slot is free) are not held back.
  if (!('token' in record) || seq.generated === 1) urgent = true;
  if (seq.backlog.length === 0) {
    const written = 'token' in record ? seq.ring.writeText(record.token, record.text) : seq.ring.writeFinal(record);
    if (written) return;
  }
  seq.backlog.push(record);
  seq.ring.markWaiting();
  scheduler.setPaused(seq.id, true);
}

/** Writes what the ring now has room for; true when nothing is left waiting. */
function drainBacklog(seq: Sequence): boolean {
  while (seq.backlog.length > 0) {
    const record = seq.backlog[0];
    const written = 'token' in record ? seq.ring.writeText(record.token, record.text) : seq.ring.writeFinal(record);
    if (!written) {
      seq.ring.markWaiting();
      return false;
    }
    seq.backlog.shift();
    unannounced = true;
  }
  return true;
}

function finish(seq: Sequence, stopReason: StopReason, stopSequenceIndex = -1): void {
  if (seq.done) return;
  seq.done = true;
  if (stopReason !== 'stop_sequence' && stopReason !== 'cancelled') {
    const rest = seq.text.finish();
    if (rest.length > 0) emit(seq, { token: -1, text: encoder.encode(rest) });
  }
  // Free the slot before the final record is out, so a reader that sees the end also sees the slot free.
  // Its KV state stays, for the next request that starts with the same tokens (unless it is unknown after
  // an error, or out of the pool: preempted).
  const keep = stopReason !== 'error' && !seq.setAside;
  const slot = scheduler.remove(seq.id, !keep);
  if (slot !== undefined && slot >= 0) {
    if (keep) {
      prefixCache.store(slot, heldTokens(seq), now());
    } else {
      context.seqRemove(slot, -1, -1);
      prefixCache.clear(slot);
    }
  }
  seq.setAside = undefined;
  sequences.delete(seq.id);
  publishStatus();
  const end = now();
  const firstTokenAt = seq.firstTokenAt || end;
  const admittedAt = seq.admittedAt || end;
  emit(seq, {
    stopReason,
    stopSequenceIndex,
    promptTokens: seq.prompt.length,
    cachedPromptTokens: seq.cached,
    generatedTokens: seq.generated,
    queueMs: admittedAt - seq.submittedAt,
    prefillMs: firstTokenAt - admittedAt,
    decodeMs: end - firstTokenAt,
  });
  if (seq.backlog.length > 0) draining.add(seq);
}

/** The tokens whose KV state the sequence's slot holds. */
function heldTokens(seq: Sequence): Int32Array {
  const held = new Int32Array(seq.computed);
  held.set(seq.prompt.subarray(0, Math.min(seq.computed, seq.prompt.length)));
  if (seq.computed > seq.prompt.length) held.set(seq.output.slice(0, seq.computed - seq.prompt.length), seq.prompt.length);
  return held;
}

/** Takes a sampled token: the next step needs it (and the count) before its text is published. */
function take(seq: Sequence, token: number): void {
  seq.generated++;
  seq.output.push(token);
  seq.lastToken = token;
  if (seq.generated === 1) seq.firstTokenAt = now();
}

/** Whether a taken token ends its sequence whatever its text. */
function endsSequence(seq: Sequence, token: number): boolean {
  return endOfGeneration.has(token) || seq.generated >= seq.maxTokens;
}

/** Writes a taken token's text into the ring, and ends the sequence on its end token, a stop sequence or max_tokens. */
function publish(seq: Sequence, token: number): void {
  if (seq.done) return; // cancelled, or ended by a stop sequence, while the token was waiting
  if (endOfGeneration.has(token)) return finish(seq, 'end_turn');
  const chunk = seq.text.push(pieceOf(seq, token));
  if (chunk.stopIndex >= 0) {
    if (chunk.text.length > 0) emit(seq, { token, text: encoder.encode(chunk.text) });
    return finish(seq, 'stop_sequence', chunk.stopIndex);
  }
  emit(seq, { token, text: encoder.encode(chunk.text) });
  if (seq.generated >= seq.maxTokens) finish(seq, 'max_tokens');
}

function submit(command: Extract<EngineCommand, { type: 'submit' }>): void {
  const contextLeft = settings.maxContext - command.prompt.length;
  const seq: Sequence = {
    id: command.id,
    prompt: command.prompt,
    params: command.params,
    maxTokens: Math.min(command.params.maxTokens, contextLeft),
    ring: new RingWriter(command.ring),
    text: new TextStream(command.params.stopSequences ?? []),
    shownSpecial: new Set(command.params.shownSpecialTokens ?? []),
    slot: -1,
    backlog: [],
    lastToken: -1,
    generated: 0,
    output: [],
    computed: 0,
    cached: 0,
    submittedAt: command.submittedAt,
    admittedAt: 0,
    firstTokenAt: 0,
    done: false,
  };
  if (command.prompt.length === 0 || contextLeft < 1) return finish(seq, 'error');
  if (seq.maxTokens < 1) return finish(seq, 'max_tokens');
  if (!scheduler.submit({ id: seq.id, promptLength: seq.prompt.length })) return finish(seq, 'overloaded');
  sequences.set(seq.id, seq);
}

/** Applies queued commands; false once shutdown was asked for. */
function takeCommands(): boolean {
  for (let message = receiveMessageOnPort(commands); message; message = receiveMessageOnPort(commands)) {
    const command = message.message as EngineCommand;
    if (command.type === 'shutdown') return false;
    if (command.type === 'submit') submit(command);
    else if (command.type === 'cancel') {
      const seq = sequences.get(command.id);
      if (seq) finish(seq, 'cancelled');
      for (const d of draining) if (d.id === command.id && command.abandon) draining.delete(d);
    }
  }
  return true;
}

function resumeReaders(): void {
  for (const seq of sequences.values()) {
    if (seq.backlog.length > 0 && drainBacklog(seq)) scheduler.setPaused(seq.id, false);
  }
  for (const seq of draining) if (drainBacklog(seq)) draining.delete(seq);
}

function configureSampler(seq: Sequence): boolean {
  const p = seq.params;
  try {
    context.configureSampler(seq.slot, {
      temperature: p.temperature ?? 0,
      topP: p.topP ?? 1,
      topK: p.topK ?? 0,
      seed: p.seed ?? 0,
      banned: p.ignoreEos ? eogTokens : undefined,
      grammar: p.grammar?.gbnf,
      grammarLazy: p.grammar?.lazy,
      grammarTriggerPatterns: p.grammar?.triggerPatterns,
      grammarTriggerTokens: p.grammar?.triggerTokens,
      grammarPrefill: p.grammar?.prefill,
    });
    return true;
  } catch (err) {
    log(`request ${seq.id}: ${(err as Error).message}`, 'error');
    finish(seq, 'error');
    return false;
  }
}

function withoutSequence(plan: StepPlan, id: number): StepPlan {
  const prefill = plan.prefill.filter((p) => p.id !== id);
  const decode = plan.decode.filter((d) => d.id !== id);
  const copies = plan.copies.filter((c) => c.id !== id);
  return { ...plan, copies, prefill, decode, tokens: decode.length + prefill.reduce((n, p) => n + p.count, 0) };
}

/** Drops a free slot's cached prefix to give its cells to others, saving it first when worth it. */
function reclaim(slot: number): void {
  saveBeforeEviction(slot, 0);
  context.seqRemove(slot, -1, -1);
  prefixCache.clear(slot);
}

/** Takes a running request's state out of the pool, freeing its cells until it is resumed. */
function preempt(id: number, slot: number): void {
  const seq = sequences.get(id)!;
  seq.setAside = context.seqStateGet(slot);
  context.seqRemove(slot, -1, -1);
  Atomics.add(status, StatusWord.Preempted, 1);
}

/** Puts a preempted request's state back; false (and the request ended) when llama.cpp refuses it. */
function resume(id: number, slot: number): boolean {
  const seq = sequences.get(id)!;
  const state = seq.setAside!;
  seq.setAside = undefined;
  if (context.seqStateSet(slot, state)) return true;
  log(`request ${id}: its KV state could not be put back after preemption`, 'error');
  finish(seq, 'error');
  return false;
}

/**
 * Carries out a plan's memory moves (reclaimed prefixes, preemptions, resumptions, admissions and
 * shared-prefix copies), before its batch runs (or when it has no tokens: a request may be admitted to
 * wait for its prefix). Returns the plan without the requests that failed to start.
 */
function admit(plan: StepPlan): StepPlan {
  for (const slot of plan.reclaimed) reclaim(slot);
  for (const { id, slot } of plan.preempted) preempt(id, slot);
  for (const { id, slot } of plan.resumed) if (!resume(id, slot)) plan = withoutSequence(plan, id);
  for (const { id, slot, cached } of plan.admitted) {
    const seq = sequences.get(id)!;
    seq.slot = slot;
    seq.admittedAt = now();
    // Keep the reused prefix of what the slot holds; drop the rest.
    saveBeforeEviction(slot, cached);
    context.seqRemove(slot, cached, -1);
    seq.cached = seq.computed = cached;
    Atomics.add(status, StatusWord.Admitted, 1);
    Atomics.add(status, StatusWord.PromptTokens, seq.prompt.length);
    Atomics.add(status, StatusWord.CachedPromptTokens, cached);
    if (!configureSampler(seq)) plan = withoutSequence(plan, id);
  }
  for (const copy of plan.copies) {
    const seq = sequences.get(copy.id)!;
    // The copy shares the donor's cells; whatever the slot held would sit at the same positions.
    context.seqRemove(copy.to, -1, -1);
    context.seqCopy(copy.from, copy.to, 0, copy.tokens);
    Atomics.add(status, StatusWord.CachedPromptTokens, copy.tokens - seq.cached);
    seq.cached = seq.computed = copy.tokens;
  }
  return plan;
}

/** Starts a step: one llama_decode over the plan's tokens. Returns the tokens it will sample, -1 when refused. */
function launchStep(plan: StepPlan): number {
  let n = 0;
  let nSample = 0;
  const entries: Array<DecodeEntry | PrefillEntry> = [...plan.decode, ...plan.prefill];
  for (const entry of entries) {
    const seq = sequences.get(entry.id)!;
    if (!('start' in entry)) {
      batchTokens[n] = seq.lastToken;
      batchPositions[n] = seq.prompt.length + seq.generated - 1;
      batchSeqIds[n] = entry.slot;
      sampleAt[nSample] = n;
      sampledFor[nSample++] = seq;
      n++;
      continue;
    }
    batchTokens.set(seq.prompt.subarray(entry.start, entry.start + entry.count), n);
    for (let i = 0; i < entry.count; i++) {
      batchPositions[n + i] = entry.start + i;
      batchSeqIds[n + i] = entry.slot;
    }
    n += entry.count;
    if (entry.last) {
      sampleAt[nSample] = n - 1;
      sampledFor[nSample++] = seq;
    }
  }
  sampledFor.fill(undefined as unknown as Sequence, nSample);
  if (context.decode(batchTokens, batchPositions, batchSeqIds, n, sampleAt, nSample) !== 0) {
    failStep(plan); // llama.cpp could not place the batch (no KV room, or aborted)
    return -1;
  }
  scheduler.commit(plan);
  countStep(plan);
  for (const { id } of plan.decode) sequences.get(id)!.computed++;
  for (const chunk of plan.prefill) sequences.get(chunk.id)!.computed = chunk.start + chunk.count;
  return nSample;
}

/**
 * Waits for the launched step and takes its tokens. A token that ends its sequence is published at once (so
 * the sequence is not in the next step); the others go to `into`, to be published after the next launch.
 */
function takeStep(plan: StepPlan, count: number, into: TakenTokens): void {
  if (count <= 0) return;
  if (context.sample(sampled) !== 0) return failStep(plan);
  for (let i = 0; i < count; i++) {
    const seq = sampledFor[i];
    if (seq.done) continue; // ended (by a stop sequence) while this step computed: the token is not its
    take(seq, sampled[i]);
    if (overlapSteps && !endsSequence(seq, sampled[i])) into.add(seq, sampled[i]);
    else publish(seq, sampled[i]);
  }
}

/** Ends the sequences of a step that failed; the engine keeps serving the others. */
function failStep(plan: StepPlan): void {
  for (const entry of [...plan.decode, ...plan.prefill]) {
    const seq = sequences.get(entry.id);
    if (seq) finish(seq, 'error');
  }
}

/**
 * Runs a step. With overlapping steps, the previous step's tokens are published while this one computes;
 * this step's tokens then wait for the next.
 */
function runStep(plan: StepPlan): void {
  const toSample = launchStep(plan);
  const earlier = unpublished;
  unpublished = spareTokens;
  spareTokens = earlier;
  earlier.publishAll();
  takeStep(plan, toSample, unpublished);
}

function publishStatus(): void {
  Atomics.store(status, StatusWord.SlotsBusy, scheduler.busySlots);
  Atomics.store(status, StatusWord.KvCellsUsed, scheduler.pool.used);
  Atomics.store(status, StatusWord.Queued, scheduler.queued);
}

function countStep(plan: StepPlan): void {
  Atomics.add(status, StatusWord.Steps, 1);
  Atomics.add(status, StatusWord.DecodedTokens, plan.decode.length);
  Atomics.add(status, StatusWord.PrefilledTokens, plan.tokens - plan.decode.length);
}

function loop(): void {
  for (;;) {
    const bell = Atomics.load(doorbell, 0);
    if (!takeCommands()) return;
    resumeReaders();
    for (let result = promptFiles?.take(); result; result = promptFiles!.take()) fileJobDone(result);
    const plan = admit(scheduler.plan());
    publishStatus();
    if (plan.tokens === 0) {
      unpublished.publishAll();
      announce(true);
      // Idle for a while: hand a cached prefix to the file thread (one save at a time; it rings when done).
      if (sequences.size === 0 && unsavedSlot() >= 0 && !promptFiles!.saveBusy) {
        const wait = lastStepAt + PERSIST_AFTER_IDLE_MS - now();
        if (wait <= 0) persistOne();
        else Atomics.wait(doorbell, 0, bell, wait);
        continue;
      }
      Atomics.wait(doorbell, 0, bell);
      continue;
    }
    runStep(plan);
    lastStepAt = now();
    announce(false);
  }
}

post({ type: 'ready', model: model.info(), context: context.info() });
loop();
unpublished.publishAll();
for (const seq of sequences.values()) finish(seq, 'cancelled');
announce(true);
if (promptFiles) {
  for (const result of promptFiles.finish()) fileJobDone(result);
  promptFiles.close();
}
while (persistOne(true));
context.free();
model.free();
