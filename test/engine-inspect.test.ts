// Engine.inspect() (what the dashboard shows of the engine): each request's state and tokens, and the cached
// prefixes held by free slots and saved on disk.
import t from 'tap';
import type { EngineInspection } from '../src/engine/inspection.js';
import { collect, slotsFreed, startEngine } from './helpers/engine.js';
import { tinyModelPath } from './helpers/models.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

t.test('requests queued and running, then the prefixes they leave in memory and on disk', async (t) => {
  const engine = await startEngine(await tinyModelPath(), { slots: 2, promptCache: { folder: t.testdir(), maxBytes: 1 << 30 } });
  t.teardown(() => engine.close());
  const prompt = (seed: number) => Int32Array.from({ length: 300 }, (_, i) => 100 + ((i * seed) % 700));
  const cancel = new AbortController();
  const generations = [1, 2, 3].map((seed) => engine.generate(prompt(seed), { maxTokens: 600, ignoreEos: true }, cancel.signal));
  const ids = generations.map((g) => g.id);
  const running = generations.map((g) => collect(g));

  let seen: EngineInspection | undefined;
  for (let i = 0; i < 200; i++) {
    seen = await engine.inspect();
    const states = seen.requests.map((r) => r.state);
    if (states.filter((s) => s === 'decode').length === 2 && states.includes('queued')) break;
    await sleep(5);
  }
  t.same(seen!.requests.map((r) => r.id).sort(), [...ids].sort(), 'every request, by its generation id');
  t.same(seen!.requests.map((r) => r.state).sort(), ['decode', 'decode', 'queued'], 'two in the slots decode, the third waits');
  const queued = seen!.requests.find((r) => r.state === 'queued')!;
  t.match(queued, { slot: -1, promptTokens: 300, generatedTokens: 0 }, 'the queued one has no slot yet');
  for (const r of seen!.requests.filter((r) => r.state === 'decode')) {
    t.equal(r.prefilledTokens, 300, 'a decoding request has its whole prompt computed');
    t.ok(r.generatedTokens > 0, 'and has generated');
  }
  t.same(await Promise.all([engine.inspect(), engine.inspect()]).then(([a, b]) => a === b), true, 'calls while one is owed share its answer');

  cancel.abort();
  await Promise.all(running);
  t.equal(await slotsFreed(engine), 0, 'cancelled, they leave their slots');
  const idle = await engine.inspect();
  t.same(idle.requests, [], 'nothing running');
  t.ok(idle.memoryPrefixes.length >= 2, 'the free slots hold the prefixes their requests left');
  for (const p of idle.memoryPrefixes) {
    t.ok(p.tokens > 300 && p.bytes > 0 && p.slot !== undefined && p.lastUsed > Date.now() - 60_000, `slot ${p.slot}: ${p.tokens} tokens, ${p.bytes} bytes`);
  }

  // Idle for a second, the engine saves them to disk, one at a time.
  let disk = idle.diskPrefixes;
  for (let i = 0; i < 100 && disk.length < idle.memoryPrefixes.length; i++) {
    await sleep(100);
    disk = (await engine.inspect()).diskPrefixes;
  }
  t.equal(disk.length, idle.memoryPrefixes.length, 'every prefix is saved on disk');
  t.same(disk.map((p) => p.tokens).sort(), idle.memoryPrefixes.map((p) => p.tokens).sort(), 'with its tokens');
  t.ok(disk.every((p) => p.bytes > 0 && p.slot === undefined), 'and the file\'s bytes');

  await engine.close();
  t.same(await engine.inspect(), { requests: [], memoryPrefixes: [], diskPrefixes: [] }, 'a closed engine holds nothing');
});
