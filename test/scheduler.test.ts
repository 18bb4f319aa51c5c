// The scheduler alone, driven by a fake engine loop (no model): it plans steps, "runs" them and commits.
import t from 'tap';
import { Scheduler, type StepPlan } from '../src/engine/scheduler.js';

/** A fake engine for the scheduler: a decoding sequence finishes after `gen` tokens. */
function fakeEngineRun(scheduler: Scheduler, gen: Map<number, number>, maxSteps = 1000): StepPlan[] {
  const plans: StepPlan[] = [];
  const produced = new Map<number, number>();
  for (let step = 0; step < maxSteps; step++) {
    const plan = scheduler.plan();
    if (plan.tokens === 0) break;
    plans.push(plan);
    scheduler.commit(plan);
    const sampled = [...plan.decode.map((d) => d.id), ...plan.prefill.filter((p) => p.last).map((p) => p.id)];
    for (const id of sampled) {
      const n = (produced.get(id) ?? 0) + 1;
      produced.set(id, n);
      if (n >= gen.get(id)!) scheduler.remove(id);
    }
  }
  return plans;
}

t.test('admits first come first served into free slots and reuses freed slots', async (t) => {
  const s = new Scheduler({ poolCells: 1 << 20, slots: 2, stepTokenBudget: 64, queueLength: 8, fillCompletingSteps: true });
  for (const id of [1, 2, 3]) t.ok(s.submit({ id, promptLength: 4 }));
  const first = s.plan();
  t.same(first.admitted, [{ id: 1, slot: 0, cached: 0 }, { id: 2, slot: 1, cached: 0 }]);
  t.equal(s.queued, 1);
  s.commit(first);
  t.equal(s.remove(1), 0, 'removing a running request frees its slot');
  const second = s.plan();
  t.same(second.admitted, [{ id: 3, slot: 0, cached: 0 }], 'the waiting request takes the freed slot');
  t.same(second.decode.map((d) => d.id), [2]);
});

t.test('chunked prefill stays within the step budget and never stalls decoding (steps filled)', async (t) => {
  const s = new Scheduler({ poolCells: 1 << 20, slots: 4, stepTokenBudget: 16, queueLength: 8, fillCompletingSteps: true });
  s.submit({ id: 1, promptLength: 3 });
  s.commit(s.plan()); // prompt 1 done: decoding from now on
  s.submit({ id: 2, promptLength: 40 });
  s.submit({ id: 3, promptLength: 6 });
  const chunks: number[][] = [];
  for (let i = 0; i < 3; i++) {
    const plan = s.plan();
    t.ok(plan.tokens <= 16, `step ${i} within budget (${plan.tokens})`);
    t.same(plan.decode.map((d) => d.id).includes(1), true, `step ${i} decodes the generating sequence`);
    chunks.push(plan.prefill.map((p) => p.count));
    s.commit(plan);
  }
  // Budget 16 - 1 decode = 15 for prompts: request 2 (oldest) is served first, then request 3.
  t.same(chunks[0], [15]);
  t.same(chunks[1], [15], 'request 2 continues; request 2 is older so 3 waits for budget');
  t.same(chunks[2], [10, 5], 'request 2 finishes its prompt, request 3 starts with what is left');
  const last = s.plan();
  t.same(last.decode.map((d) => d.id), [1, 2], 'request 2 now decodes');
  t.same(last.prefill.map((p) => [p.id, p.start, p.count, p.last]), [[3, 5, 1, true]]);
});

t.test('by default a step that completes a prompt takes no other prompt\'s chunk', async (t) => {
  const s = new Scheduler({ poolCells: 1 << 20, slots: 4, stepTokenBudget: 16, queueLength: 8 });
  s.submit({ id: 1, promptLength: 20 });
  s.submit({ id: 2, promptLength: 6 });
  s.submit({ id: 3, promptLength: 4 });
  const steps: number[][][] = [];
  for (let plan = s.plan(); plan.tokens > 0 && steps.length < 10; plan = s.plan()) {
    steps.push(plan.prefill.map((p) => [p.id, p.count]));
    s.commit(plan);
  }
  // Each prompt's first token comes as early as its turn allows: 2 is not held back by a chunk of 3.
  t.same(steps.slice(0, 4), [[[1, 16]], [[1, 4]], [[2, 6]], [[3, 4]]]);
});

t.test('every request completes: no starvation under a stream of arrivals', async (t) => {
  const s = new Scheduler({ poolCells: 1 << 20, slots: 2, stepTokenBudget: 8, queueLength: 100 });
  const gen = new Map<number, number>();
  for (let id = 1; id <= 20; id++) {
    s.submit({ id, promptLength: 1 + ((id * 7) % 13) });
    gen.set(id, 1 + (id % 5));
  }
  const plans = fakeEngineRun(s, gen);
  const admittedOrder = plans.flatMap((p) => p.admitted.map((a) => a.id));
  t.same(admittedOrder, Array.from({ length: 20 }, (_, i) => i + 1), 'admitted in arrival order');
  t.equal(s.busySlots, 0);
  t.equal(s.queued, 0);
});

t.test('cancellation removes waiting and running requests', async (t) => {
  const s = new Scheduler({ poolCells: 1 << 20, slots: 1, stepTokenBudget: 8, queueLength: 4 });
  s.submit({ id: 1, promptLength: 2 });
  s.submit({ id: 2, promptLength: 2 });
  s.commit(s.plan());
  t.equal(s.remove(2), -1, 'a waiting request holds no slot');
  t.equal(s.remove(1), 0, 'a running one frees its slot');
  t.equal(s.remove(1), undefined, 'unknown after removal');
  t.equal(s.plan().tokens, 0, 'nothing left to do');
});

t.test('the queue is bounded', async (t) => {
  const s = new Scheduler({ poolCells: 1 << 20, slots: 1, stepTokenBudget: 8, queueLength: 2 });
  t.ok(s.submit({ id: 1, promptLength: 2 }));
  t.ok(s.submit({ id: 2, promptLength: 2 }));
  t.ok(s.submit({ id: 3, promptLength: 2 }), 'a free slot counts: one can be admitted at the next step');
  t.notOk(s.submit({ id: 4, promptLength: 2 }), 'full: refused');
  s.plan();
  t.equal(s.queued, 2);
  t.notOk(s.submit({ id: 5, promptLength: 2 }), 'still full once the slot is taken');
  s.remove(1);
  t.ok(s.submit({ id: 6, promptLength: 2 }), 'room again after a request leaves');
});

t.test('paused sequences are left out until resumed', async (t) => {
  const s = new Scheduler({ poolCells: 1 << 20, slots: 2, stepTokenBudget: 8, queueLength: 2, fillCompletingSteps: true });
  s.submit({ id: 1, promptLength: 1 });
  s.submit({ id: 2, promptLength: 1 });
  s.commit(s.plan());
  s.setPaused(1, true);
  t.same(s.plan().decode.map((d) => d.id), [2]);
  s.setPaused(1, false);
  t.same(s.plan().decode.map((d) => d.id), [1, 2]);
});

t.test('a placement with a cached prefix skips those prompt tokens', async (t) => {
  const s = new Scheduler({ poolCells: 1 << 20, slots: 2, stepTokenBudget: 64, queueLength: 2, place: (_request, free) => ({ slot: free[free.length - 1], cached: 30 }) });
  s.submit({ id: 1, promptLength: 40 });
  s.submit({ id: 2, promptLength: 20 });
  const plan = s.plan();
  t.same(plan.admitted, [{ id: 1, slot: 1, cached: 30 }, { id: 2, slot: 0, cached: 19 }], 'at most all but the last prompt token');
  t.same(plan.prefill.map((p) => [p.id, p.start, p.count]), [[1, 30, 10]]);
  s.commit(plan);
  t.same(s.plan().prefill.map((p) => [p.id, p.start, p.count]), [[2, 19, 1]]);
});

t.test('a request waiting for its prefix to be loaded takes no part in steps until loaded()', async (t) => {
  const s = new Scheduler({
    poolCells: 1 << 20, slots: 2, stepTokenBudget: 64, queueLength: 2,
    place: (request, free) => (request.id === 1 ? { slot: free[0], cached: 0, loading: 30 } : { slot: free[0], cached: 0 }),
  });
  s.submit({ id: 1, promptLength: 40 });
  s.submit({ id: 2, promptLength: 5 });
  const first = s.plan();
  t.same(first.prefill.map((p) => p.id), [2], 'only the other request computes');
  t.ok(s.isLoading(1));
  s.commit(first);
  t.same(s.plan().prefill, [], 'still waiting');
  s.loaded(1, 30);
  t.notOk(s.isLoading(1));
  t.same(s.plan().prefill.map((p) => [p.id, p.start, p.count]), [[1, 30, 10]], 'then only the rest of its prompt');
});

t.test('a failed load leaves the whole prompt to compute', async (t) => {
  const s = new Scheduler({ poolCells: 1 << 20, slots: 1, stepTokenBudget: 64, queueLength: 1, place: (_request, free) => ({ slot: free[0], cached: 0, loading: 30 }) });
  s.submit({ id: 1, promptLength: 40 });
  t.same(s.plan().prefill, []);
  s.loaded(1, 0);
  t.same(s.plan().prefill.map((p) => [p.id, p.start, p.count]), [[1, 0, 40]]);
});

t.test('rejects a budget that decoding alone could exhaust', async (t) => {
  t.throws(() => new Scheduler({ poolCells: 1 << 20, slots: 8, stepTokenBudget: 8, queueLength: 1 }), RangeError);
});

t.test('a request sharing a running request\'s prefix waits for it, then copies it instead of computing it', async (t) => {
  // Fake placement: request 2 and 3 share 30 prompt tokens with request 1; 3 arrives later.
  const s = new Scheduler({
    poolCells: 1 << 20, slots: 4, stepTokenBudget: 16, queueLength: 8,
    place: (request, freeSlots, running) => ({
      slot: freeSlots[0],
      cached: 0,
      donor: request.id !== 1 && running.includes(1) ? { id: 1, tokens: 30 } : undefined,
    }),
  });
  for (const id of [1, 2]) s.submit({ id, promptLength: 40 });
  const prefilled = new Map<number, number>();
  const copies: Array<[number, number, number, number]> = [];
  for (let step = 0; step < 20; step++) {
    if (step === 1) s.submit({ id: 3, promptLength: 35 });
    const plan = s.plan();
    for (const c of plan.copies) copies.push([step, c.id, c.from, c.tokens]);
    for (const p of plan.prefill) prefilled.set(p.id, (prefilled.get(p.id) ?? 0) + p.count);
    s.commit(plan);
  }
  t.same(prefilled.get(1), 40, 'the donor computes its whole prompt');
  t.same(copies, [[2, 2, 0, 30], [2, 3, 0, 30]], 'both copy as soon as the donor holds 30 tokens (after 2 steps of 16)');
  t.same(prefilled.get(2), 10, 'request 2 computes only what it does not share');
  t.same(prefilled.get(3), 5);
});

t.test('a request whose donor leaves early computes the prefix itself', async (t) => {
  const s = new Scheduler({
    poolCells: 1 << 20, slots: 2, stepTokenBudget: 16, queueLength: 8,
    place: (_request, freeSlots, running) => ({ slot: freeSlots[0], cached: 0, donor: running.includes(1) ? { id: 1, tokens: 30 } : undefined }),
  });
  s.submit({ id: 1, promptLength: 40 });
  s.submit({ id: 2, promptLength: 40 });
  const first = s.plan();
  t.same(first.prefill.map((p) => p.id), [1], 'request 2 waits for its donor');
  s.commit(first);
  s.remove(1); // cancelled
  const second = s.plan();
  t.same(second.copies, []);
  t.same(second.prefill.map((p) => [p.id, p.start, p.count]), [[2, 0, 16]], 'request 2 starts from scratch');
});

// ---- the KV pool (fake engine: no model) ----

/** Runs plans with a fake engine (each step's tokens committed); a sequence ends after `gen` tokens. */
function runPool(s: Scheduler, gen: Map<number, number>, maxSteps = 1000): { plans: StepPlan[]; maxUsed: number } {
  const plans: StepPlan[] = [];
  const produced = new Map<number, number>();
  let maxUsed = 0;
  for (let step = 0; step < maxSteps; step++) {
    const plan = s.plan();
    if (plan.tokens === 0) break;
    plans.push(plan);
    s.commit(plan);
    maxUsed = Math.max(maxUsed, s.pool.used);
    for (const id of [...plan.decode.map((d) => d.id), ...plan.prefill.filter((p) => p.last).map((p) => p.id)]) {
      const n = (produced.get(id) ?? 0) + 1;
      produced.set(id, n);
      if (n >= gen.get(id)!) s.remove(id);
    }
  }
  return { plans, maxUsed };
}

t.test('a request is admitted only when the pool holds its prompt beside the prompts in progress', async (t) => {
  const s = new Scheduler({ poolCells: 100, slots: 4, stepTokenBudget: 32, queueLength: 8 });
  s.submit({ id: 1, promptLength: 60 });
  s.submit({ id: 2, promptLength: 50 });
  const first = s.plan();
  t.same(first.admitted.map((a) => a.id), [1], 'request 2 waits: 60 + 50 cells > 100');
  t.equal(s.queued, 1);
  const { maxUsed } = runPool(s, new Map([[1, 5], [2, 5]]));
  t.ok(maxUsed <= 100, `never more cells than the pool (${maxUsed})`);
  t.equal(s.busySlots, 0, 'both finished');
});

t.test('cached prefixes of free slots are reclaimed, least valuable first, when cells are needed', async (t) => {
  const order: number[][] = [];
  const s = new Scheduler({
    poolCells: 100, slots: 3, stepTokenBudget: 64, queueLength: 8,
    place: (request, free) => ({ slot: request.id === 3 ? 2 : free[0], cached: 0 }),
    reclaimOrder: (free) => { order.push([...free]); return [...free].reverse(); },
  });
  s.submit({ id: 1, promptLength: 40 });
  s.submit({ id: 2, promptLength: 40 });
  runPool(s, new Map([[1, 1], [2, 1]]));
  t.equal(s.pool.used, 80, 'the finished requests leave their cells as cached prefixes');
  s.submit({ id: 3, promptLength: 50 });
  const plan = s.plan();
  t.same(plan.admitted.map((a) => a.id), [3]);
  t.equal(plan.admitted[0].slot, 2, 'the empty slot');
  t.same(plan.reclaimed, [1], 'one prefix is reclaimed, the first in reclaimOrder');
  t.ok(order.some((slots) => slots.join() === '0,1'), 'chosen among the free slots holding prefixes');
  t.ok(s.pool.used + 50 <= 100);
});

t.test('when a growing sequence needs cells, the most recently admitted request is preempted, then resumed', async (t) => {
  const s = new Scheduler({ poolCells: 64, slots: 2, stepTokenBudget: 32, queueLength: 8 });
  s.submit({ id: 1, promptLength: 20 });
  s.submit({ id: 2, promptLength: 20 });
  const preempted: number[] = [];
  const resumed: number[] = [];
  const produced = new Map<number, number>();
  for (let step = 0; step < 200 && (s.busySlots > 0 || s.queued > 0); step++) {
    const plan = s.plan();
    preempted.push(...plan.preempted.map((p) => p.id));
    resumed.push(...plan.resumed.map((p) => p.id));
    for (const p of plan.preempted) t.notOk([...plan.decode, ...plan.prefill].some((e) => e.id === p.id), 'a preempted request is not in its step');
    s.commit(plan);
    t.ok(s.pool.used <= 64, `step ${step}: ${s.pool.used} cells`);
    for (const id of [...plan.decode.map((d) => d.id), ...plan.prefill.filter((p) => p.last).map((p) => p.id)]) {
      produced.set(id, (produced.get(id) ?? 0) + 1);
      if (produced.get(id)! >= 40) s.remove(id);
    }
  }
  t.same(preempted, [2], 'request 2, admitted last, made room for request 1');
  t.same(resumed, [2], 'and came back once request 1 was done');
  t.equal(produced.get(1), 40);
  t.equal(produced.get(2), 40, 'neither failed: both generated all their tokens');
});

t.test('preempted requests come back before any new request is admitted', async (t) => {
  const s = new Scheduler({ poolCells: 64, slots: 3, stepTokenBudget: 32, queueLength: 8 });
  s.submit({ id: 1, promptLength: 20 });
  s.submit({ id: 2, promptLength: 20 });
  let step = 0;
  while (step++ < 100) {
    const plan = s.plan();
    s.commit(plan);
    if (plan.preempted.length > 0) break;
  }
  s.submit({ id: 3, promptLength: 4 });
  const plan = s.plan();
  t.same(plan.admitted, [], 'the new request waits while request 2 is out of the pool');
  s.remove(1);
  const next = s.plan();
  t.same(next.resumed.map((r) => r.id), [2]);
  t.same(next.admitted.map((a) => a.id), [3], 'then the new one');
});

t.test('prompt chunks end at image breaks; a whole image waits for a step with room for all of it', async (t) => {
  const s = new Scheduler({ poolCells: 1 << 20, slots: 2, stepTokenBudget: 16, queueLength: 8, fillCompletingSteps: true });
  s.submit({ id: 1, promptLength: 40, breaks: [5, 25] }); // text 0-5, image 5-25 (20 tokens, over the budget), text 25-40
  const chunks: Array<[number, number]> = [];
  for (let plan = s.plan(); plan.tokens > 0; plan = s.plan()) {
    chunks.push(...plan.prefill.map((p): [number, number] => [p.start, p.count]));
    s.commit(plan);
    if (plan.prefill.some((p) => p.last)) break;
  }
  t.same(chunks, [[0, 5], [5, 16], [21, 4], [25, 15]], 'no chunk crosses 5 or 25; the image is cut by the budget');

  const w = new Scheduler({ poolCells: 1 << 20, slots: 2, stepTokenBudget: 16, queueLength: 8, fillCompletingSteps: true });
  w.submit({ id: 1, promptLength: 30, breaks: [4, 16], whole: new Set([4]) }); // a 12-token image computed whole
  w.submit({ id: 2, promptLength: 10 });
  const first = w.plan();
  t.same(first.prefill.map((p) => [p.id, p.start, p.count]), [[1, 0, 4], [2, 0, 10]]);
  w.commit(first);
  const second = w.plan();
  t.same(second.prefill.map((p) => [p.id, p.start, p.count]), [[1, 4, 12]], 'the whole image, beside the decode token');
  t.same(second.decode.map((d) => d.id), [2]);
});
