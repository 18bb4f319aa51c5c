// Prefix reuse across requests: when a request ends, the KV state of its tokens stays in its slot. A new
// request goes to the free slot whose held tokens share the longest prefix with its prompt, so only the
// rest of its prompt is computed (Claude Code resends the same long system prompt and tools every turn).
// Unless a slot holds a useful prefix, an empty slot is taken, then the least recently used one, so
// valuable prefixes live longest; the same order says whose cells the pool reclaims first.
import type { Placement } from './scheduler.js';

export function commonPrefixLength(a: Int32Array, b: Int32Array): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

export class SlotPrefixCache {
  /** The tokens whose KV state each slot holds (valid while the slot is free). */
  private readonly held: Int32Array[];
  private readonly lastUsed: number[];

  /**
   * @param minUsefulPrefix shorter cached prefixes count as none when choosing a slot: computing them again
   * costs less than a gap between busy slots costs every decode step.
   */
  constructor(slots: number, private readonly minUsefulPrefix = 0) {
    this.held = Array.from({ length: slots }, () => new Int32Array(0));
    this.lastUsed = new Array<number>(slots).fill(0);
  }

  /**
   * The free slot for `prompt` and how many of its tokens that slot already holds. At least the last
   * prompt token is always computed again: its logits give the first new token, and logits are never
   * reused from another request.
   */
  place(prompt: Int32Array, freeSlots: readonly number[]): Placement {
    const useful = (cached: number): number => (cached >= this.minUsefulPrefix ? cached : 0);
    let best: Placement = { slot: freeSlots[0], cached: -1 };
    for (const slot of freeSlots) {
      const cached = Math.min(commonPrefixLength(this.held[slot], prompt), prompt.length - 1);
      // In order: a useful prefix, any prefix, an empty slot, least recently used.
      const order = [useful(cached) - useful(best.cached), cached - best.cached,
        Number(this.held[slot].length === 0) - Number(this.held[best.slot].length === 0), this.lastUsed[best.slot] - this.lastUsed[slot]];
      const better = best.cached < 0 || (order.find((d) => d !== 0) ?? 0) > 0;
      if (better) best = { slot, cached };
    }
    return best;
  }

  /** Free slots in the order their prefixes are given up: least recently used first. */
  reclaimOrder(freeSlots: readonly number[]): number[] {
    return [...freeSlots].sort((a, b) => this.lastUsed[a] - this.lastUsed[b]);
  }

  /** The tokens whose KV state a free slot holds. */
  heldBy(slot: number): Int32Array {
    return this.held[slot];
  }

  /** When the slot's request left it (epoch milliseconds). */
  lastUse(slot: number): number {
    return this.lastUsed[slot];
  }

  /** Records what a slot holds as its request leaves it. */
  store(slot: number, tokens: Int32Array, now: number): void {
    this.held[slot] = tokens;
    this.lastUsed[slot] = now;
  }

  /** The slot's KV state is unknown or gone: it holds nothing reusable. */
  clear(slot: number): void {
    this.held[slot] = new Int32Array(0);
  }
}
