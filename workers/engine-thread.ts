// The engine thread: the one thread that owns the llama.cpp model and context. It runs a tight loop:
// take commands, ask the scheduler for a step plan, carry out its memory moves in the KV pool, run its
// tokens as ONE llama_decode batch (the next token of every generating sequence plus prompt chunks),
// sample, and write each sequence's text into its ring. It calls the addon synchronously; when there is
// nothing to compute it sleeps on the doorbell. Its rooms: the scheduler and the pool's accounting
// (scheduler.ts, kv-pool.ts, prefix-cache.ts: plain data), the steps (step-runner.ts), the rings
// (sequence-output.ts) and the prompt cache on disk (slot-persistence.ts).
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { loadAddon, type NativeContext } from '../src/native.js';
import { Scheduler, type Placement, type StepPlan } from '../src/engine/scheduler.js';
import { RingWriter } from '../src/engine/ring.js';
import { TextStream } from '../src/engine/text-stream.js';
import { commonPrefixLength, SlotPrefixCache } from '../src/engine/prefix-cache.js';
import type { EngineCommand, StopReason } from '../src/engine/types.js';
import { STATUS_WORDS, StatusWord } from '../src/engine/status.js';
import { heldTokens, type Sequence } from '../src/engine/sequence.js';
import { SequenceOutput } from '../src/engine/sequence-output.js';
import { StepRunner } from '../src/engine/step-runner.js';
import { SlotPersistence } from '../src/engine/slot-persistence.js';
import { wholeImageLimit } from '../src/engine/settings.js';
import type { EngineThreadData, EngineThreadLog, EngineThreadMessage } from '../src/engine/thread-protocol.js';
import { engineInspector } from '../src/engine/inspection.js';

const post = (message: EngineThreadMessage): void => parentPort!.postMessage(message);
const log: EngineThreadLog = (message, level = 'warn') => post({ type: 'log', level, message });
const now = (): number => performance.timeOrigin + performance.now();

const { settings, commands, doorbell: doorbellBuffer, outputBell, status: statusBuffer } = workerData as EngineThreadData;
const doorbell = new Int32Array(doorbellBuffer);
const status = new Int32Array(statusBuffer, 0, STATUS_WORDS);
const encoder = new TextEncoder();

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
/** Whether the whole model runs on a GPU, where a step's cost barely grows with its tokens. */
const wholeModelOnGpu = context.info().wholeModelOnGpu;
const pieces = model.tokenPieces();
const { slidingWindow, eogTokens } = model.info();
const endOfGeneration = new Set(eogTokens);
const nothing = new Uint8Array(0);
/**
 * Shorter prefixes are computed rather than waited for (from a running request that is computing them)
 * or read from disk, are not saved to disk, and count as none when a request is placed (prefix-cache.ts).
 */
const MIN_SHARED_TOKENS = 256;
/**
 * How long the engine stays idle before it saves a prefix: a save still copies the slot's state on this
 * thread (and the file thread's hashing and writing compete with decoding for the cores), and a client's next
 * turn often comes right after the last one ended, extending the prefix that would have been saved.
 */
const PERSIST_AFTER_IDLE_MS = 1000;

const sequences = new Map<number, Sequence>();
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
const output = new SequenceOutput(new Int32Array(outputBell), settings.streamIntervalMs, (id, paused) => scheduler.setPaused(id, paused));
const persistence = new SlotPersistence(settings, {
  context, prefixCache, scheduler, sequences, windowKept, log, minTokens: MIN_SHARED_TOKENS, doorbell: doorbellBuffer,
  countCached: (tokens) => Atomics.add(status, StatusWord.CachedPromptTokens, tokens),
});
const inspect = engineInspector({
  sequences, scheduler, prefixCache, slots: settings.slots,
  stateBytes: (slot) => context.seqStateSize(slot),
  stored: () => persistence.stored().map(({ tokens, bytes, lastUsed }) => ({ tokens: tokens.length, bytes, lastUsed })),
});
/** A vision model's projector, opened once for the whole process (the preparation workers share it). */
const vision = settings.mmproj
  ? new addon.Vision(settings.mmproj, settings.modelPath, { gpu: settings.gpuLayers !== 0, threads: settings.threads, batchSize: context.info().batchSize })
  : undefined;
const visionInfo = vision?.info();
const steps = new StepRunner(context, settings, settings.overlapSteps ?? wholeModelOnGpu, sequences, {
  launched,
  take,
  ends: (seq, token) => endOfGeneration.has(token) || seq.generated >= seq.maxTokens,
  publish,
  fail: (seq) => finish(seq, 'error'),
}, vision);

/**
 * The free slot with the longest cached prefix; better, a running request that shares more (its KV state
 * is shared once computed), or better still, a saved prefix that shares more (loaded into the slot by the
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
  return persistence.load(id, prompt, placement.slot, Math.max(placement.cached, donor?.tokens ?? 0)) ?? { ...placement, donor };
}

/**
 * Whether the slot, cut back to its first `tokens` positions, still holds what its next position attends
 * to: sliding-window layers keep only the window's cells (llama-server makes the same check).
 */
function windowKept(slot: number, tokens: number): boolean {
  return slidingWindow === 0 || tokens === 0 || context.seqPosMin(slot) <= Math.max(0, tokens - slidingWindow);
}

function finish(seq: Sequence, stopReason: StopReason, stopSequenceIndex = -1): void {
  if (seq.done) return;
  seq.done = true;
  if (stopReason !== 'stop_sequence' && stopReason !== 'cancelled') {
    const rest = seq.text.finish();
    if (rest.length > 0) output.emit(seq, { token: -1, text: encoder.encode(rest) });
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
  output.emit(seq, {
    stopReason,
    stopSequenceIndex,
    promptTokens: seq.prompt.length,
    cachedPromptTokens: seq.cached,
    generatedTokens: seq.generated,
    queueMs: admittedAt - seq.submittedAt,
    prefillMs: firstTokenAt - admittedAt,
    decodeMs: end - firstTokenAt,
  });
  output.ended(seq);
}

/** Takes a sampled token: the next step needs it (and the count) before its text is published. */
function take(seq: Sequence, token: number): void {
  seq.generated++;
  seq.output.push(token);
  seq.lastToken = token;
  if (seq.generated === 1) seq.firstTokenAt = now();
}

function pieceOf(seq: Sequence, token: number): Uint8Array {
  if (pieces.special[token] && !seq.shownSpecial.has(token)) return nothing;
  return pieces.bytes.subarray(pieces.offsets[token], pieces.offsets[token + 1]);
}

/** Writes a taken token's text into the ring, and ends the sequence on its end token, a stop sequence or max_tokens. */
function publish(seq: Sequence, token: number): void {
  if (seq.done) return; // cancelled, or ended by a stop sequence, while the token was waiting
  if (endOfGeneration.has(token)) return finish(seq, 'end_turn');
  const chunk = seq.text.push(pieceOf(seq, token));
  if (chunk.stopIndex >= 0) {
    if (chunk.text.length > 0) output.emit(seq, { token, text: encoder.encode(chunk.text) });
    return finish(seq, 'stop_sequence', chunk.stopIndex);
  }
  output.emit(seq, { token, text: encoder.encode(chunk.text) });
  if (seq.generated >= seq.maxTokens) finish(seq, 'max_tokens');
}

/** A step llama.cpp took: its tokens are computed. A request's first prompt chunk starts it. */
function launched(plan: StepPlan): void {
  for (const chunk of plan.prefill) {
    const seq = sequences.get(chunk.id)!;
    if (seq.started) continue;
    seq.started = true;
    output.emit(seq, { cachedPromptTokens: seq.cached });
  }
  scheduler.commit(plan);
  for (const { id } of plan.decode) sequences.get(id)!.computed++;
  for (const chunk of plan.prefill) sequences.get(chunk.id)!.computed = chunk.start + chunk.count;
  Atomics.add(status, StatusWord.Steps, 1);
  Atomics.add(status, StatusWord.DecodedTokens, plan.decode.length);
  Atomics.add(status, StatusWord.PrefilledTokens, plan.tokens - plan.decode.length);
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
    started: false,
    done: false,
  };
  if (command.prompt.length === 0 || contextLeft < 1) return finish(seq, 'error');
  if (seq.maxTokens < 1) return finish(seq, 'max_tokens');
  // A prompt chunk is all text or all image tokens (step-runner.ts); an image whose tokens attend both ways is one chunk.
  const images = command.params.images ?? [];
  const breaks = images.flatMap((image) => [image.start, image.start + image.count]);
  const whole = visionInfo?.nonCausal ? new Set(images.map((image) => image.start)) : undefined;
  if (whole && images.some((image) => image.count > wholeImageLimit(settings))) return finish(seq, 'error'); // refused when prepared
  if (!scheduler.submit({ id: seq.id, promptLength: seq.prompt.length, breaks, whole })) return finish(seq, 'overloaded');
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
      if (command.abandon) output.abandon(command.id);
    } else if (command.type === 'inspect') post({ type: 'inspection', inspection: inspect() });
  }
  return true;
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
  persistence.saveBeforeEviction(slot, 0);
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
    persistence.saveBeforeEviction(slot, cached);
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

function publishStatus(): void {
  Atomics.store(status, StatusWord.SlotsBusy, scheduler.busySlots);
  Atomics.store(status, StatusWord.KvCellsUsed, scheduler.pool.used);
  Atomics.store(status, StatusWord.Queued, scheduler.queued);
}

function loop(): void {
  /** When the engine last ran a step. */
  let lastStepAt = 0;
  for (;;) {
    const bell = Atomics.load(doorbell, 0);
    if (!takeCommands()) return;
    output.drain(sequences.values());
    persistence.takeResults();
    const plan = admit(scheduler.plan());
    publishStatus();
    if (plan.tokens === 0) {
      steps.flush();
      output.announce(true);
      // Idle for a while: hand a cached prefix to the file thread (one save at a time; it rings when done).
      if (sequences.size === 0 && persistence.idleWork) {
        const wait = lastStepAt + PERSIST_AFTER_IDLE_MS - now();
        if (wait <= 0) persistence.saveOne();
        else Atomics.wait(doorbell, 0, bell, wait);
        continue;
      }
      Atomics.wait(doorbell, 0, bell);
      continue;
    }
    const stepStart = now();
    steps.run(plan);
    lastStepAt = now();
    // The step's time, shared by its tokens: the prompt tokens' share measures prefill speed.
    const prefilled = plan.tokens - plan.decode.length;
    if (prefilled > 0) Atomics.add(status, StatusWord.PrefillMs, Math.round(((lastStepAt - stepStart) * prefilled) / plan.tokens));
    output.announce(false);
  }
}

post({ type: 'ready', model: model.info(), context: context.info() });
loop();
steps.flush();
for (const seq of sequences.values()) finish(seq, 'cancelled');
output.announce(true);
persistence.close();
context.free();
model.free();
