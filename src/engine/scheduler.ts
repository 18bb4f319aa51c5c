// The continuous-batching scheduler: which requests hold slots, what each decode step computes, and where
// the KV pool's cells go (src/engine/kv-pool.ts: every sequence's cells come from one pool). It knows
// nothing of llama.cpp; the engine thread asks it for a plan, carries out the plan's memory moves, runs its
// tokens as one llama_decode batch and reports back. Policy:
//  - admission is first come, first served into free slots; the waiting queue is bounded. A request is
//    admitted when the pool can hold its whole prompt beside the prompts still being computed, counting
//    the cells of prefixes cached in free slots, which are reclaimed (least valuable first) as needed;
//  - when the step's tokens do not fit in the free cells (sequences grow as they generate), cached
//    prefixes are reclaimed first; then the most recently admitted running request is preempted: its KV
//    state is set aside (the engine keeps it) and its cells freed. Preempted requests are resumed, oldest
//    first, as soon as their cells fit again, before any new request is admitted;
//  - every generating sequence that is not paused decodes one token per step (a long prompt
//    arriving never stalls them);
//  - the rest of the step's token budget goes to prompt chunks, oldest request first, so every
//    prompt makes progress and none starves; unless told otherwise, a step that completes a prompt takes
//    no other prompt's chunk (see SchedulerOptions.fillCompletingSteps);
//  - a request whose prompt starts like a running request's (its "donor") does not compute that shared
//    prefix a second time: it waits until the donor has computed it, then the step copies the donor's
//    KV state into its slot, and it prefills only the rest;
//  - a request whose prefix is being loaded from disk into its slot waits for it (loaded()), taking no
//    part in steps meanwhile;
//  - a prompt chunk never crosses a request's breaks (where its image tokens start and end): llama.cpp
//    takes a batch of token ids or one of embeddings, so the engine decodes image chunks apart. Images
//    whose tokens attend to each other both ways (Gemma 3's) are computed whole, in one step.

import { KvPool } from './kv-pool.js';

export interface ScheduledRequest {
  readonly id: number;
  readonly promptLength: number;
  /** Prompt positions, ascending, that a prompt chunk ends at when it reaches them. */
  readonly breaks?: readonly number[];
  /** Breaks from which the tokens up to the next break are one chunk, whole: it waits for a step with room. */
  readonly whole?: ReadonlySet<number>;
}

export interface DecodeEntry {
  id: number;
  slot: number;
}

export interface AdmittedEntry extends Placement {
  id: number;
}

export interface PrefillEntry {
  id: number;
  slot: number;
  /** Prompt positions [start, start + count) are computed in this step. */
  start: number;
  count: number;
  /** True when this chunk ends the prompt: its last token's logits give the first generated token. */
  last: boolean;
}

/** Copy the KV state of slot `from` into slot `to` and keep its first `tokens` positions. */
export interface CopyEntry {
  id: number;
  from: number;
  to: number;
  tokens: number;
}

/** A running request that leaves the pool for a while (preempted) or comes back (resumed), in its slot. */
export interface SlotEntry {
  id: number;
  slot: number;
}

export interface StepPlan {
  /**
   * The plan's moves, in the order the engine carries them out, before the batch runs: free slots whose
   * cached prefixes are dropped, requests preempted, requests resumed, requests admitted (with the slot and
   * the prompt tokens it already holds), and shared prefixes copied.
   */
  reclaimed: number[];
  preempted: SlotEntry[];
  resumed: SlotEntry[];
  admitted: AdmittedEntry[];
  /** Shared prefixes copied from donors, after admission and before the batch runs. */
  copies: CopyEntry[];
  decode: DecodeEntry[];
  prefill: PrefillEntry[];
  /** Tokens in the batch (decode + prefill). */
  tokens: number;
}

/** Where an admitted request goes: a free slot, and how many of its prompt tokens are already there. */
export interface Placement {
  slot: number;
  /** Prompt tokens whose KV state the slot already holds (a cached prefix): not computed again. */
  cached: number;
  /** A running request whose first `tokens` prompt tokens are this request's too (more than `cached`). */
  donor?: { id: number; tokens: number };
  /** The slot's contents are being replaced by a saved prefix of this many prompt tokens (see loaded()). */
  loading?: number;
}

export interface SchedulerOptions {
  slots: number;
  stepTokenBudget: number;
  queueLength: number;
  /** KV cells that all sequences share. */
  poolCells: number;
  /**
   * Free slots holding cached prefixes, in the order their cells are reclaimed: least valuable first
   * (default: as given).
   */
  reclaimOrder?: (freeSlots: readonly number[]) => number[];
  /**
   * Picks the slot for a request among the free ones (default: the lowest, nothing cached), and a donor
   * among the running requests (ids in admission order).
   */
  place?: (request: ScheduledRequest, freeSlots: readonly number[], running: readonly number[]) => Placement;
  /**
   * Whether a step that completes a prompt also takes other prompts' chunks (default false). Where a step
   * costs in proportion to its tokens (the CPU), they only delay that prompt's first token and save the
   * others nothing; where a step costs about the same with more tokens (a GPU), they are progress for free.
   */
  fillCompletingSteps?: boolean;
}

/** Tokens from `start` to the request's next break (or its prompt's end). */
function untilBreak(request: ScheduledRequest, start: number): number {
  const next = request.breaks?.find((at) => at > start) ?? request.promptLength;
  return Math.min(next, request.promptLength) - start;
}

interface Running {
  request: ScheduledRequest;
  slot: number;
  /** Prompt tokens already computed. */
  prefilled: number;
  /** Its reader is behind: left out of steps. */
  paused: boolean;
  /** Preempted: its state is out of the pool, to be put back into this many cells. */
  setAside?: number;
  /** Waiting for a donor to compute a shared prefix, to copy it instead of computing it. */
  donor?: { id: number; tokens: number };
  /** Waiting for a saved prefix of this many tokens to be loaded into its slot. */
  loading?: number;
}

export class Scheduler {
  private readonly waiting: ScheduledRequest[] = [];
  /** In admission order, which is also the order prompt chunks are served (and preemption's, reversed). */
  private readonly running = new Map<number, Running>();
  private readonly freeSlots: number[];
  /** Preempted requests, oldest first: the order they are resumed in. */
  private readonly preempted: number[] = [];
  readonly pool: KvPool;

  constructor(private readonly options: SchedulerOptions) {
    if (options.stepTokenBudget <= options.slots) {
      // Otherwise decoding sequences could take the whole budget and starve waiting prompts.
      throw new RangeError(`step token budget (${options.stepTokenBudget}) must exceed the slot count (${options.slots})`);
    }
    this.freeSlots = Array.from({ length: options.slots }, (_, i) => i);
    this.pool = new KvPool(options.poolCells, options.slots);
  }

  get queued(): number {
    return this.waiting.length;
  }

  get busySlots(): number {
    return this.running.size;
  }

  /** Whether a request holds the slot. */
  isBusy(slot: number): boolean {
    return !this.freeSlots.includes(slot);
  }

  /** Queues a request; false when the queue is full (the caller reports it as overloaded). */
  submit(request: ScheduledRequest): boolean {
    // Requests that a free slot will take at the next step are not waiting in the queue.
    if (this.waiting.length - this.freeSlots.length >= this.options.queueLength) return false;
    this.waiting.push(request);
    return true;
  }

  /**
   * Removes a request wherever it is; returns its slot if it held one (now free, its cells kept as a cached
   * prefix unless `dropCells`), -1 otherwise, undefined if unknown.
   */
  remove(id: number, dropCells = false): number | undefined {
    const queuedAt = this.waiting.findIndex((r) => r.id === id);
    if (queuedAt >= 0) {
      this.waiting.splice(queuedAt, 1);
      return -1;
    }
    const run = this.running.get(id);
    if (!run) return undefined;
    this.running.delete(id);
    if (run.setAside !== undefined) this.preempted.splice(this.preempted.indexOf(id), 1);
    if (dropCells) this.pool.clear(run.slot);
    this.freeSlots.push(run.slot);
    this.freeSlots.sort((a, b) => a - b);
    return run.slot;
  }

  /** A paused sequence is left out of steps (its reader is behind) until resumed. */
  setPaused(id: number, paused: boolean): void {
    const run = this.running.get(id);
    if (run) run.paused = paused;
  }

  /** Plans the next step. A plan without tokens means there is nothing to compute now. */
  plan(): StepPlan {
    const plan: StepPlan = { reclaimed: [], preempted: [], resumed: [], admitted: [], copies: [], decode: [], prefill: [], tokens: 0 };
    this.resume(plan);
    if (this.preempted.length === 0) this.admit(plan);
    plan.copies = this.takeSharedPrefixes();
    const resumed = new Set(plan.resumed.map((r) => r.id));
    for (;;) {
      this.fillStep(plan);
      if (this.fits(plan.tokens, plan)) return plan;
      const victim = [...this.running].reverse().find(([id, run]) => run.setAside === undefined && run.loading === undefined && !resumed.has(id));
      if (!victim) return plan; // cannot happen: one sequence alone always fits (maxContext <= pool)
      const [id, run] = victim;
      run.setAside = this.pool.length(run.slot);
      this.pool.clear(run.slot);
      this.preempted.push(id);
      plan.preempted.push({ id, slot: run.slot });
    }
  }

  /** Resumes preempted requests, oldest first, while their cells and the rest of their prompts fit. */
  private resume(plan: StepPlan): void {
    while (this.preempted.length > 0) {
      const run = this.running.get(this.preempted[0])!;
      // Room for its cells, the rest of its prompt and one more token for every sequence in the pool.
      if (!this.fits(run.setAside! + run.request.promptLength - run.prefilled + this.running.size, plan, true)) return;
      this.pool.extend(run.slot, run.setAside!);
      run.setAside = undefined;
      plan.resumed.push({ id: this.preempted.shift()!, slot: run.slot });
    }
  }

  private admit(plan: StepPlan): void {
    while (this.waiting.length > 0 && this.freeSlots.length > 0) {
      const request = this.waiting[0];
      const placed = this.options.place?.(request, this.freeSlots, [...this.running.keys()]) ?? { slot: this.freeSlots[0], cached: 0 };
      const slot = this.freeSlots.includes(placed.slot) ? placed.slot : this.freeSlots[0];
      // At least one prompt token is computed: its logits give the first generated token.
      const limit = request.promptLength - 1;
      const cached = Math.max(0, Math.min(placed.cached, limit));
      const donor = placed.donor && this.running.has(placed.donor.id) && Math.min(placed.donor.tokens, limit) > cached
        ? { id: placed.donor.id, tokens: Math.min(placed.donor.tokens, limit) }
        : undefined;
      const loading = placed.loading !== undefined && !donor ? Math.min(placed.loading, limit) : undefined;
      // A loaded prefix takes new cells; a donor's is shared; what the slot holds beyond `cached` goes.
      const kept = loading !== undefined ? 0 : cached;
      const cells = request.promptLength - (donor?.tokens ?? kept);
      if (!this.fits(cells + 1, plan, true, slot, kept)) return;
      this.waiting.shift();
      this.freeSlots.splice(this.freeSlots.indexOf(slot), 1);
      this.pool.truncate(slot, kept);
      this.running.set(request.id, { request, slot, prefilled: kept, paused: false, donor, loading });
      plan.admitted.push({ id: request.id, slot, cached: kept });
    }
  }

  /** The step's decode tokens and prompt chunks, within the token budget and the cells the pool can give. */
  private fillStep(plan: StepPlan): void {
    const decode: DecodeEntry[] = [];
    for (const [id, run] of this.running) {
      if (this.steps(run) && run.prefilled === run.request.promptLength) decode.push({ id, slot: run.slot });
    }
    const cells = this.pool.free + this.reclaimable();
    let budget = Math.max(0, Math.min(this.options.stepTokenBudget, cells) - decode.length);
    const prefill: PrefillEntry[] = [];
    for (const [id, run] of this.running) {
      if (budget === 0) break;
      const remaining = run.request.promptLength - run.prefilled;
      if (remaining === 0 || !this.steps(run) || run.donor || run.loading !== undefined) continue;
      const span = untilBreak(run.request, run.prefilled);
      if (span > budget && run.request.whole?.has(run.prefilled)) continue;
      const count = Math.min(remaining, budget, span);
      const last = count === remaining;
      prefill.push({ id, slot: run.slot, start: run.prefilled, count, last });
      budget -= count;
      if (last && !this.options.fillCompletingSteps) break;
    }
    plan.decode = decode;
    plan.prefill = prefill;
    plan.tokens = decode.length + prefill.reduce((n, p) => n + p.count, 0);
  }

  /** Whether a running request takes part in steps. */
  private steps(run: Running): boolean {
    return !run.paused && run.setAside === undefined;
  }

  /**
   * Whether `cells` more fit in the pool, reclaiming cached prefixes of free slots (but `keep`, truncated
   * to `keepLength` first) as needed; with `reserve`, beside the cells the running prompts still need.
   * Nothing is reclaimed unless the cells then fit.
   */
  private fits(cells: number, plan: StepPlan, reserve = false, keep = -1, keepLength = 0): boolean {
    const taken = reserve ? this.pendingPrompts() : 0;
    const freedByKeep = keep >= 0 ? Math.max(0, this.pool.exclusive(keep) - keepLength) : 0;
    if (this.pool.free - taken + freedByKeep >= cells) return true;
    if (this.pool.free - taken + freedByKeep + this.reclaimable(keep) < cells) return false;
    for (const slot of this.reclaimCandidates(keep)) {
      if (this.pool.free - taken + freedByKeep >= cells) break;
      this.pool.clear(slot);
      plan.reclaimed.push(slot);
    }
    return true;
  }

  /** Cells the prompts of running requests still need (a preempted request's are counted when it resumes). */
  private pendingPrompts(): number {
    let cells = 0;
    for (const run of this.running.values()) if (run.setAside === undefined) cells += run.request.promptLength - run.prefilled;
    return cells;
  }

  /** Free slots whose cached prefixes may be reclaimed, in order (never `keep`, nor one reclaimed already). */
  private reclaimCandidates(keep = -1): number[] {
    const held = this.freeSlots.filter((slot) => slot !== keep && this.pool.length(slot) > 0);
    return (this.options.reclaimOrder?.(held) ?? held).filter((slot) => this.pool.exclusive(slot) > 0);
  }

  /** Cells only one slot holds come back when it is emptied: a lower bound of what reclaiming (but `keep`) gives. */
  private reclaimable(keep = -1): number {
    return this.reclaimCandidates(keep).reduce((n, slot) => n + this.pool.exclusive(slot), 0);
  }

  /** Copies for the requests whose donor has computed their shared prefix (or gives up on a donor that left). */
  private takeSharedPrefixes(): CopyEntry[] {
    const copies: CopyEntry[] = [];
    for (const [id, run] of this.running) {
      if (!run.donor || run.setAside !== undefined) continue;
      const donor = this.running.get(run.donor.id);
      if (!donor || donor.setAside !== undefined) {
        run.donor = undefined; // the donor left (or was preempted) before its prefix was copied: compute it here
      } else if (donor.prefilled >= run.donor.tokens) {
        copies.push({ id, from: donor.slot, to: run.slot, tokens: run.donor.tokens });
        this.pool.share(donor.slot, run.slot, run.donor.tokens);
        run.prefilled = run.donor.tokens;
        run.donor = undefined;
      }
    }
    return copies;
  }

  /** The load a request waited for ended: its slot now holds its first `tokens` prompt tokens. */
  loaded(id: number, tokens: number): void {
    const run = this.running.get(id);
    if (run?.loading === undefined) return;
    run.prefilled = Math.min(tokens, run.request.promptLength - 1);
    this.pool.extend(run.slot, run.prefilled);
    run.loading = undefined;
  }

  /** Whether a request waits for its prefix to be loaded. */
  isLoading(id: number): boolean {
    return this.running.get(id)?.loading !== undefined;
  }

  /** Records that a plan's tokens were computed: their cells are taken. */
  commit(plan: StepPlan): void {
    for (const entry of plan.decode) this.pool.extend(entry.slot, 1);
    for (const chunk of plan.prefill) {
      const run = this.running.get(chunk.id);
      if (run) run.prefilled = chunk.start + chunk.count;
      this.pool.extend(chunk.slot, chunk.count);
    }
  }
}
