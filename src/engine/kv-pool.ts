// Cell accounting for the KV pool that all sequences share (llama.cpp's unified KV cache): how many cells
// are in use, and how many a change would take or give back. llama.cpp holds one cell per position of a
// sequence, and a prefix copied from another sequence shares that sequence's cells (seq_cp in a unified
// cache adds the copy's id to the same cells). So each slot's positions are a list of runs, each run a
// range of one "group" of cells computed together; a group's cells are in use up to the furthest position
// any slot still holds of it. Plain data: mirrors the engine's llama_memory_seq_* calls, slot by slot.

/** Positions [start, end) of a slot, held in the cells of `group` (whose cells start at position `start`). */
interface Run {
  group: number;
  start: number;
  end: number;
}

export class KvPool {
  private readonly runs: Run[][];
  private nextGroup = 0;
  private usedCells = 0;

  constructor(readonly cells: number, slots: number) {
    this.runs = Array.from({ length: slots }, () => []);
  }

  get used(): number {
    return this.usedCells;
  }

  get free(): number {
    return this.cells - this.usedCells;
  }

  /** Positions the slot holds. */
  length(slot: number): number {
    return this.runs[slot].at(-1)?.end ?? 0;
  }

  /** New cells for the slot's next `count` positions (computed tokens, or a state loaded into it). */
  extend(slot: number, count: number): void {
    if (count <= 0) return;
    const runs = this.runs[slot];
    const start = this.length(slot);
    const last = runs.at(-1);
    // Growing the slot's own last group keeps the runs short, when no other slot holds that group's cells
    // beyond this slot's end (after a truncation, those cells are not the ones this slot computes next).
    if (last && this.owner(last.group) === slot && this.reach(last.group) === last.end) last.end += count;
    else runs.push({ group: this.newGroup(slot), start, end: start + count });
    this.usedCells += count;
  }

  /** Drops the slot's positions from `length` on (llama_memory_seq_rm(slot, length, -1)). */
  truncate(slot: number, length: number): void {
    const before = this.extents();
    const runs = this.runs[slot];
    while (runs.length > 0 && runs.at(-1)!.start >= length) runs.pop();
    const last = runs.at(-1);
    if (last && last.end > length) last.end = length;
    this.usedCells -= before - this.extents();
  }

  /** Empties the slot. */
  clear(slot: number): void {
    this.truncate(slot, 0);
  }

  /** The slot `to` (emptied first) shares the first `tokens` positions of `from`: no new cells. */
  share(from: number, to: number, tokens: number): void {
    this.clear(to);
    const before = this.extents();
    for (const run of this.runs[from]) {
      if (run.start >= tokens) break;
      this.runs[to].push({ group: run.group, start: run.start, end: Math.min(run.end, tokens) });
    }
    this.usedCells -= before - this.extents();
  }

  /** Cells that emptying the slot would give back: those no other slot shares. */
  exclusive(slot: number): number {
    let cells = 0;
    for (const run of this.runs[slot]) {
      let sharedTo = run.start;
      for (let other = 0; other < this.runs.length; other++) {
        if (other === slot) continue;
        for (const r of this.runs[other]) if (r.group === run.group) sharedTo = Math.max(sharedTo, Math.min(r.end, run.end));
      }
      cells += run.end - sharedTo;
    }
    return cells;
  }

  /** Group ids carry their owner (the slot that computed them) in their low bits. */
  private newGroup(slot: number): number {
    return this.nextGroup++ * this.runs.length + slot;
  }

  private owner(group: number): number {
    return group % this.runs.length;
  }

  /** The furthest position any slot holds in the group. */
  private reach(group: number): number {
    let end = 0;
    for (const runs of this.runs) for (const run of runs) if (run.group === group) end = Math.max(end, run.end);
    return end;
  }

  /** Cells in use: per group, from its first position to the furthest any slot holds. */
  private extents(): number {
    const reach = new Map<number, { start: number; end: number }>();
    for (const runs of this.runs) {
      for (const run of runs) {
        const r = reach.get(run.group);
        if (!r) reach.set(run.group, { start: run.start, end: run.end });
        else r.end = Math.max(r.end, run.end);
      }
    }
    let cells = 0;
    for (const r of reach.values()) cells += r.end - r.start;
    return cells;
  }
}
