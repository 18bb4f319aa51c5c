// The continuous-batching scheduler: which requests hold slots, and what each decode step computes.
// It knows nothing of llama.cpp; the engine thread asks it for a plan, runs the plan as one
// llama_decode batch and reports back. Policy:
//  - admission is first come, first served into free slots; the waiting queue is bounded;
//  - every generating sequence that is not paused decodes one token per step (a long prompt
//    arriving never stalls them);
//  - the rest of the step's token budget goes to prompt chunks, oldest request first, so every
//    prompt makes progress and none starves; unless told otherwise, a step that completes a prompt takes
//    no other prompt's chunk (see SchedulerOptions.fillCompletingSteps);
//  - a request whose prompt starts like a running request's (its "donor") does not compute that shared
//    prefix a second time: it waits until the donor has computed it, then the step copies the donor's
//    KV state into its slot, and it prefills only the rest;
//  - a request whose prefix is being loaded from disk into its slot waits for it (loaded()), taking no
//    part in steps meanwhile.

export interface ScheduledRequest {
  readonly id: number;
  readonly promptLength: number;
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

export interface StepPlan {
  /** Requests given a slot in this step, with the slot and the prompt tokens it already holds. */
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

interface Running {
  request: ScheduledRequest;
  slot: number;
  /** Prompt tokens already computed. */
  prefilled: number;
  paused: boolean;
  /** Waiting for a donor to compute a shared prefix, to copy it instead of computing it. */
  donor?: { id: number; tokens: number };
  /** Waiting for a saved prefix of this many tokens to be loaded into its slot. */
  loading?: number;
}

export class Scheduler {
  private readonly waiting: ScheduledRequest[] = [];
  /** In admission order, which is also the order prompt chunks are served. */
  private readonly running = new Map<number, Running>();
  private readonly freeSlots: number[];

  constructor(private readonly options: SchedulerOptions) {
    if (options.stepTokenBudget <= options.slots) {
      // Otherwise decoding sequences could take the whole budget and starve waiting prompts.
      throw new RangeError(`step token budget (${options.stepTokenBudget}) must exceed the slot count (${options.slots})`);
    }
    this.freeSlots = Array.from({ length: options.slots }, (_, i) => i);
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

  /** Removes a request wherever it is; returns its slot if it held one (now free), -1 otherwise, undefined if unknown. */
  remove(id: number): number | undefined {
    const queuedAt = this.waiting.findIndex((r) => r.id === id);
    if (queuedAt >= 0) {
      this.waiting.splice(queuedAt, 1);
      return -1;
    }
    const run = this.running.get(id);
    if (!run) return undefined;
    this.running.delete(id);
    this.freeSlots.push(run.slot);
    this.freeSlots.sort((a, b) => a - b);
    return run.slot;
  }

  /** A paused sequence is left out of steps (its reader is behind) until resumed. */
  setPaused(id: number, paused: boolean): void {
    const run = this.running.get(id);
    if (run) run.paused = paused;
  }

  /** Plans the next step. An empty plan (no tokens) means there is nothing to compute now. */
  plan(): StepPlan {
    const admitted: AdmittedEntry[] = [];
    while (this.waiting.length > 0 && this.freeSlots.length > 0) {
      const request = this.waiting.shift()!;
      const placed = this.options.place?.(request, this.freeSlots, [...this.running.keys()]) ?? { slot: this.freeSlots[0], cached: 0 };
      const slot = this.freeSlots.includes(placed.slot) ? placed.slot : this.freeSlots[0];
      // At least one prompt token is computed: its logits give the first generated token.
      const limit = request.promptLength - 1;
      const cached = Math.max(0, Math.min(placed.cached, limit));
      const donor = placed.donor && this.running.has(placed.donor.id) && Math.min(placed.donor.tokens, limit) > cached
        ? { id: placed.donor.id, tokens: Math.min(placed.donor.tokens, limit) }
        : undefined;
      const loading = placed.loading !== undefined && !donor ? Math.min(placed.loading, limit) : undefined;
      this.freeSlots.splice(this.freeSlots.indexOf(slot), 1);
      this.running.set(request.id, { request, slot, prefilled: cached, paused: false, donor, loading });
      admitted.push({ id: request.id, slot, cached });
    }
    const copies = this.takeSharedPrefixes();
    const decode: DecodeEntry[] = [];
    for (const [id, run] of this.running) {
      if (!run.paused && run.prefilled === run.request.promptLength) decode.push({ id, slot: run.slot });
    }
    let budget = this.options.stepTokenBudget - decode.length;
    const prefill: PrefillEntry[] = [];
    for (const [id, run] of this.running) {
      if (budget === 0) break;
      const remaining = run.request.promptLength - run.prefilled;
      if (remaining === 0 || run.paused || run.donor || run.loading !== undefined) continue;
      const count = Math.min(remaining, budget);
      const last = count === remaining;
      prefill.push({ id, slot: run.slot, start: run.prefilled, count, last });
      budget -= count;
      if (last && !this.options.fillCompletingSteps) break;
    }
    return { admitted, copies, decode, prefill, tokens: this.options.stepTokenBudget - budget };
  }

  /** Copies for the requests whose donor has computed their shared prefix (or gives up on a donor that left). */
  private takeSharedPrefixes(): CopyEntry[] {
    const copies: CopyEntry[] = [];
    for (const [id, run] of this.running) {
      if (!run.donor) continue;
      const donor = this.running.get(run.donor.id);
      if (!donor) {
        run.donor = undefined; // the donor left (cancelled, or ended) before its prefix was copied: compute it here
      } else if (donor.prefilled >= run.donor.tokens) {
        copies.push({ id, from: donor.slot, to: run.slot, tokens: run.donor.tokens });
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
    run.loading = undefined;
  }

  /** Whether a request waits for its prefix to be loaded. */
  isLoading(id: number): boolean {
    return this.running.get(id)?.loading !== undefined;
  }

  /** Records that a plan's prompt chunks were computed. */
  commit(plan: StepPlan): void {
    for (const chunk of plan.prefill) {
      const run = this.running.get(chunk.id);
      if (run) run.prefilled = chunk.start + chunk.count;
    }
  }
}
