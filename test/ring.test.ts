import t from 'tap';
import { createRing, RingReader, RingWriter, TEXT_BYTES_PER_RECORD, type RingRecord } from '../src/engine/ring.js';
import { BellListener, createBell, ringBell } from '../src/engine/output-bell.js';
import type { FinalStats } from '../src/engine/types.js';

/** An output bell for one test: the listener for readers, `ring()` for the writing side. */
function bell(): { listener: BellListener; ring: () => void; buffer: SharedArrayBuffer } {
  const buffer = createBell();
  const words = new Int32Array(buffer);
  return { listener: new BellListener(buffer), ring: () => ringBell(words), buffer };
}

const final: FinalStats = {
  stopReason: 'max_tokens', stopSequenceIndex: -1, promptTokens: 7, cachedPromptTokens: 2,
  generatedTokens: 3, queueMs: 1.5, prefillMs: 2.25, decodeMs: 3.125,
};

async function readAll(reader: RingReader): Promise<RingRecord[]> {
  const out: RingRecord[] = [];
  for await (const record of reader.records()) out.push(record);
  return out;
}

t.test('records round trip, across wrap-around many times', async (t) => {
  const ring = createRing(4);
  const writer = new RingWriter(ring);
  const output = bell();
  const reader = new RingReader(ring, output.listener, () => {});
  const texts = Array.from({ length: 50 }, (_, i) => `piece ${i} ` + 'é'.repeat(i % 40));
  const received = readAll(reader);
  let next = 0;
  // The writer only writes when there is room, like the engine; the reader drains concurrently.
  while (next < texts.length) {
    if (writer.writeText(next, Buffer.from(texts[next]))) {
      next++;
      // Ring only every third write, as the engine does between steps: the reader still gets everything.
      if (next % 3 === 0) output.ring();
    } else {
      output.ring();
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  while (!writer.writeFinal(final)) await new Promise((resolve) => setImmediate(resolve));
  output.ring();
  const records = await received;
  t.same(records.slice(0, -1), texts.map((text, token) => ({ kind: 'text', token, text })));
  t.same(records.at(-1), { kind: 'final', ...final });
});

t.test('a full ring refuses writes without overwriting, and the reader signals room', async (t) => {
  const ring = createRing(2);
  const writer = new RingWriter(ring);
  let roomSignals = 0;
  const output = bell();
  const reader = new RingReader(ring, output.listener, () => roomSignals++);
  t.ok(writer.writeText(1, Buffer.from('a')));
  t.ok(writer.writeText(2, Buffer.from('b')));
  t.notOk(writer.writeText(3, Buffer.from('c')), 'full: refused');
  t.notOk(writer.writeFinal(final), 'full: final refused too');
  writer.markWaiting();
  const iterator = reader.records();
  t.same((await iterator.next()).value, { kind: 'text', token: 1, text: 'a' });
  t.same((await iterator.next()).value, { kind: 'text', token: 2, text: 'b' }, 'nothing was overwritten');
  t.equal(roomSignals, 1, 'the waiting writer is told once');
  t.ok(writer.writeText(3, Buffer.from('c')));
  t.ok(writer.writeFinal(final));
  output.ring();
  t.same((await iterator.next()).value, { kind: 'text', token: 3, text: 'c' });
  t.equal((await iterator.next()).value?.kind, 'final');
  t.ok((await iterator.next()).done);
});

t.test('long text spans records and multi-byte characters survive the split', async (t) => {
  const ring = createRing(8);
  const writer = new RingWriter(ring);
  // 3-byte characters never align with the 52-byte record payload.
  const text = '€'.repeat(TEXT_BYTES_PER_RECORD);
  t.ok(writer.writeText(9, Buffer.from(text)));
  t.notOk(writer.writeText(10, Buffer.from('x'.repeat(TEXT_BYTES_PER_RECORD * 6))), 'all or nothing');
  t.ok(writer.writeFinal(final));
  const records = await readAll(new RingReader(ring, bell().listener, () => {}));
  t.same(records[0], { kind: 'text', token: 9, text });
  t.equal(records.length, 2);
});

t.test('the reader waits for the writer on another thread', async (t) => {
  const { Worker } = await import('node:worker_threads');
  const ring = createRing(16);
  const output = bell();
  const ringModule = new URL('../src/engine/ring.ts', import.meta.url).href;
  const bellModule = new URL('../src/engine/output-bell.ts', import.meta.url).href;
  const code = `import('tsx/esm/api').then(async (tsx) => { tsx.register();
    const { RingWriter } = await import(${JSON.stringify(ringModule)});
    const { ringBell } = await import(${JSON.stringify(bellModule)});
    const { workerData } = await import('node:worker_threads');
    const w = new RingWriter(workerData.ring);
    const bell = new Int32Array(workerData.bell);
    for (let i = 0; i < 100; i++) {
      while (!w.writeText(i, Buffer.from('t' + i))) await new Promise((r) => setTimeout(r, 1));
      ringBell(bell);
    }
    while (!w.writeFinal(${JSON.stringify(final)})) await new Promise((r) => setTimeout(r, 1));
    ringBell(bell);
  })`;
  const worker = new Worker(code, { eval: true, workerData: { ring, bell: output.buffer } });
  const records = await readAll(new RingReader(ring, output.listener, () => {}));
  await new Promise((resolve) => worker.once('exit', resolve));
  t.equal(records.length, 101);
  t.same(records.slice(0, 100).map((r) => (r.kind === 'text' ? r.text : '')), Array.from({ length: 100 }, (_, i) => 't' + i));
});

t.test('capacity must be a power of two', async (t) => {
  t.throws(() => createRing(3), RangeError);
});

t.test('one bell wakes every waiting reader', async (t) => {
  const output = bell();
  const rings = [createRing(4), createRing(4)];
  const reading = rings.map((ring) => readAll(new RingReader(ring, output.listener, () => {})));
  await new Promise((resolve) => setImmediate(resolve)); // both readers are waiting now
  for (const [i, ring] of rings.entries()) {
    const writer = new RingWriter(ring);
    writer.writeText(i, Buffer.from(`ring ${i}`));
    writer.writeFinal(final);
  }
  output.ring();
  const [a, b] = await Promise.all(reading);
  t.same(a[0], { kind: 'text', token: 0, text: 'ring 0' });
  t.same(b[0], { kind: 'text', token: 1, text: 'ring 1' });
});

t.test('a started record carries the cached prompt tokens and comes first', async (t) => {
  const ring = createRing(4);
  const writer = new RingWriter(ring);
  const output = bell();
  t.ok(writer.writeStarted(1234));
  t.ok(writer.writeText(5, Buffer.from('hi')));
  t.ok(writer.writeFinal(final));
  output.ring();
  const records = await readAll(new RingReader(ring, output.listener, () => {}));
  t.same(records, [{ kind: 'started', cachedPromptTokens: 1234 }, { kind: 'text', token: 5, text: 'hi' }, { kind: 'final', ...final }]);
});
