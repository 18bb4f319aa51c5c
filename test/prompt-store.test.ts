// The prompt store's file handling alone, with synthetic KV states in llama.cpp's layout.
import t from 'tap';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PromptStore, readPrefix } from '../src/engine/prompt-store.js';

/** A sequence state as llama.cpp lays it out: magic, seq id, stream count, then per stream a cell count and its cells. */
function state(slot: number, slots: number, cells: number[]): Buffer {
  const word = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };
  const streams = Array.from({ length: slots }, (_, s) => (s === slot ? Buffer.concat([word(cells.length), Buffer.from(cells)]) : word(0)));
  return Buffer.concat([word(0x67676d6c), word(slot), word(slots), ...streams]);
}

const tokens = (n: number, from = 1): Int32Array => Int32Array.from({ length: n }, (_, i) => from + i);

t.test('saves and loads into a context with another slot count', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-store-'));
  const store = new PromptStore(folder, 'model', 1 << 20, () => {});
  store.save(tokens(10), state(2, 4, [1, 2, 3, 4, 5]), 2, 4);
  const reopened = new PromptStore(folder, 'model', 1 << 20, () => {});
  const found = reopened.longest(Int32Array.from([...tokens(8), 99]));
  t.equal(found?.shared, 8);
  const loaded = readPrefix(found!.entry.file, found!.entry.tokens.length, 2);
  const expected = state(0, 2, [1, 2, 3, 4, 5]);
  expected.writeUInt32LE(2, 4); // the seq id word is kept as saved (llama.cpp ignores it)
  t.same([...loaded!], [...expected], 'the stream goes first, with the new stream count');
});

t.test('a longer prefix replaces the prefixes it extends; the byte budget evicts the least recently used', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-store-'));
  const store = new PromptStore(folder, 'model', 400, () => {});
  store.save(tokens(10), state(0, 1, [1]), 0, 1);
  store.save(tokens(20), state(0, 1, [2]), 0, 1);
  t.equal(store.size, 1, 'the 10-token prefix of the 20-token one is redundant');
  store.save(tokens(20, 500), state(0, 1, [3]), 0, 1);
  store.save(tokens(20, 900), state(0, 1, [4]), 0, 1);
  t.ok(store.size < 3, `within 400 bytes: ${store.size} kept`);
  t.equal(store.longest(tokens(20, 900))?.shared, 20, 'the newest is kept');
});

t.test('files that fail a check are discarded and logged', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-store-'));
  const logged: string[] = [];
  const store = new PromptStore(folder, 'model', 1 << 20, (m) => logged.push(m));
  store.save(tokens(12), state(0, 1, [7, 7]), 0, 1);
  const [name] = readdirSync(join(folder, 'model'));
  writeFileSync(join(folder, 'model', 'truncated.kv'), 'PNSVPC01');
  const again = new PromptStore(folder, 'model', 1 << 20, (m) => logged.push(m));
  t.equal(again.size, 1, 'the truncated file is not indexed');
  t.match(logged, [/truncated\.kv: unreadable header/]);
  t.ok(name.endsWith('.kv'));
  t.notOk(store.longest(tokens(3, 1000)), 'nothing shares a prefix with unrelated tokens');
});
