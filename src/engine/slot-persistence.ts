// The prompt cache on disk, as the engine thread drives it: which slots' cached prefixes are saved and
// when, and a saved prefix loaded into the slot of a request that waits there for it. The files are
// prompt-store.ts's; the thread that writes and reads them is prompt-files.ts's.
import type { NativeContext } from '../native.js';
import type { Placement, Scheduler } from './scheduler.js';
import type { SlotPrefixCache } from './prefix-cache.js';
import type { Sequence } from './sequence.js';
import type { EngineThreadLog } from './thread-protocol.js';
import type { EngineSettings } from './types.js';
import { modelFingerprint, PromptStore, type StoredPrefix } from './prompt-store.js';
import { PromptFiles, type FileResult, type LoadResult } from './prompt-files.js';

export interface SlotPersistenceDeps {
  context: NativeContext;
  prefixCache: SlotPrefixCache;
  scheduler: Scheduler;
  sequences: ReadonlyMap<number, Sequence>;
  /** Whether the slot, cut back to its first `tokens` positions, still holds its sliding window. */
  windowKept(slot: number, tokens: number): boolean;
  /** Prompt tokens served from a cache (the status words count them). */
  countCached(tokens: number): void;
  log: EngineThreadLog;
  /** Shorter prefixes are neither saved nor worth a load. */
  minTokens: number;
  /** The engine's doorbell, which the file thread rings when a job ends. */
  doorbell: SharedArrayBuffer;
}

export class SlotPersistence {
  private readonly store?: PromptStore;
  private readonly files?: PromptFiles;
  /** Saved prefixes being loaded for requests waiting in their slots, by request id. */
  private readonly loads = new Map<number, { entry: StoredPrefix; slot: number; tokens: number }>();
  /** Per slot: the held tokens last saved (the same array as the prefix cache's). */
  private readonly persisted: Array<Int32Array | undefined>;

  constructor(settings: Pick<EngineSettings, 'slots' | 'modelPath' | 'mmproj' | 'promptCache'>, private readonly deps: SlotPersistenceDeps) {
    this.persisted = new Array(settings.slots);
    if (!settings.promptCache) return;
    const { folder, maxBytes } = settings.promptCache;
    // Image tokens' KV state is the projector's too: a model with a projector keeps its prefixes apart.
    const fingerprint = modelFingerprint(settings.modelPath) + (settings.mmproj ? `-${modelFingerprint(settings.mmproj).slice(0, 8)}` : '');
    this.store = new PromptStore(folder, fingerprint, maxBytes, deps.log);
    this.files = new PromptFiles(this.store.dir, deps.doorbell);
  }

  /**
   * A saved prefix of `prompt` that beats `better` tokens (what the slots and running requests offer) by
   * minTokens: its load into `slot` starts, and the request waits there for it. Undefined when none does.
   */
  load(id: number, prompt: Int32Array, slot: number, better: number): Placement | undefined {
    const stored = this.store?.longest(prompt);
    if (!stored || stored.shared < better + this.deps.minTokens) return undefined;
    this.loads.set(id, { entry: stored.entry, slot, tokens: stored.shared });
    this.files!.submit({ kind: 'load', id, file: stored.entry.file, tokens: stored.entry.tokens.length });
    return { slot, cached: 0, loading: stored.shared };
  }

  /** The prefixes saved on disk. */
  stored(): StoredPrefix[] {
    return this.store?.list() ?? [];
  }

  /** Handles the jobs the file thread finished: saved prefixes indexed (or why not logged), loads applied. */
  takeResults(): void {
    for (let result = this.files?.take(); result; result = this.files!.take()) this.done(result);
  }

  /**
   * Before a slot's contents are replaced by ones sharing only their first `kept` tokens: saves its prefix
   * if that loses a useful part not on disk yet, and the saves in progress leave room for its copy. While
   * requests keep coming, the engine is never idle for the idle-time saves, and an evicted prefix would
   * have to be computed again.
   */
  saveBeforeEviction(slot: number, kept: number): void {
    if (!this.unsaved(slot) || this.deps.prefixCache.heldBy(slot).length - kept < this.deps.minTokens) return;
    if (this.files!.canSave(this.deps.context.seqStateSize(slot))) this.save(slot);
  }

  /** Whether an idle engine has a prefix to save, and no save is in progress (one at a time). */
  get idleWork(): boolean {
    return this.unsavedSlot() >= 0 && !this.files!.saveBusy;
  }

  /** Hands one free slot's unsaved prefix to the file thread; false when there was none. */
  saveOne(): boolean {
    const slot = this.unsavedSlot();
    if (slot < 0) return false;
    this.save(slot);
    return true;
  }

  /** At shutdown: waits for the file thread's jobs, then writes the prefixes still unsaved on this thread. */
  close(): void {
    if (!this.files) return;
    for (const result of this.files.finish()) this.done(result);
    this.files.close();
    for (let slot = this.unsavedSlot(); slot >= 0; slot = this.unsavedSlot()) this.save(slot, true);
  }

  private done(result: FileResult): void {
    if (result.kind === 'load') this.apply(result);
    else if ('error' in result) this.deps.log(`prompt cache: not saved: ${result.error}`);
    else this.store!.add(result.file, result.tokens, result.bytes);
  }

  /**
   * A load ended: its state goes into the slot of the request that waits for it (computed cold instead when
   * the file failed a check, llama.cpp refused the state, or the pool had no room for it). A request
   * cancelled meanwhile left its slot, so its state is dropped.
   */
  private apply(result: LoadResult): void {
    const { context, scheduler } = this.deps;
    const load = this.loads.get(result.id);
    if (!load) return;
    this.loads.delete(result.id);
    const seq = this.deps.sequences.get(result.id);
    const state = 'state' in result ? result.state : undefined;
    if (!state) this.store!.discard(load.entry.file, 'error' in result ? result.error : 'no state');
    if (!seq || seq.slot !== load.slot || !scheduler.isLoading(seq.id)) return;
    // The slot's prefix-cache record is written when the request leaves it, not here. The whole stored
    // prefix goes into the pool before its tail is dropped.
    const room = load.entry.tokens.length <= scheduler.pool.free;
    const kept = Math.min(load.tokens, seq.prompt.length - 1);
    const set = state !== undefined && room && context.seqStateSet(load.slot, state);
    if (state && room && !set) this.store!.discard(load.entry.file, 'llama.cpp could not load its KV state');
    if (set && context.seqRemove(load.slot, kept, -1) && this.deps.windowKept(load.slot, kept)) {
      this.store!.touch(load.entry);
      this.deps.countCached(kept);
      seq.cached = seq.computed = kept;
      scheduler.loaded(seq.id, kept);
      return;
    }
    context.seqRemove(load.slot, -1, -1); // computed cold
    scheduler.loaded(seq.id, 0);
  }

  /** Whether the slot holds a prefix worth saving that is not on disk yet. */
  private unsaved(slot: number): boolean {
    const held = this.deps.prefixCache.heldBy(slot);
    return this.store !== undefined && this.persisted[slot] !== held && held.length >= this.deps.minTokens;
  }

  /** A free slot holding a prefix worth saving that is not on disk yet; -1 when there is none. */
  private unsavedSlot(): number {
    for (let slot = 0; slot < this.persisted.length; slot++) if (this.unsaved(slot) && !this.deps.scheduler.isBusy(slot)) return slot;
    return -1;
  }

  /** Saves the slot's prefix: hands a copy of its state to the file thread, or (`now`) writes it on this thread. */
  private save(slot: number, now = false): void {
    const held = this.deps.prefixCache.heldBy(slot);
    this.persisted[slot] = held;
    const state = this.deps.context.seqStateGet(slot);
    if (now) this.store!.save(held, state);
    else this.files!.submit({ kind: 'save', tokens: held, state });
  }
}
