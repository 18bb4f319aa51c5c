// The prompt store's file handling alone, with synthetic KV states in llama.cpp's layout.
import t from 'tap';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PromptStore, readPrefix } from '../src/engine/prompt-store.js';

const word = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/** A sequence state as llama.cpp lays it out for the pool: magic, seq id, stream count (1), a cell count and the cells. */
function state(slot: number, cells: number[]): Buffer {
  return Buffer.concat([word(0x67676d6c), word(slot), word(1), word(cells.length), Buffer.from(cells)]);
}

const tokens = (n: number, from = 1): Int32Array => Int32Array.from({ length: n }, (_, i) => from + i);

t.test('saves and loads a slot\'s state; refuses a state that is not one stream with cells', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-store-'));
  t.teardown(() => rmSync(folder, { recursive: true, force: true }));
  const logged: string[] = [];
  const store = new PromptStore(folder, 'model', 1 << 20, (m) => logged.push(m));
  store.save(tokens(10), state(2, [1, 2, 3, 4, 5]));
  const reopened = new PromptStore(folder, 'model', 1 << 20, () => {});
  const found = reopened.longest(Int32Array.from([...tokens(8), 99]));
  t.equal(found?.shared, 8);
  t.same([...readPrefix(found!.entry.file, found!.entry.tokens.length)], [...state(2, [1, 2, 3, 4, 5])], 'the same state back');
  const twoStreams = Buffer.concat([word(0x67676d6c), word(0), word(2), word(1), Buffer.from([9]), word(0)]);
  store.save(tokens(30, 100), twoStreams);
  store.save(tokens(30, 200), state(0, []));
  t.equal(store.size, 1, 'neither was saved');
  t.match(logged, [/not saved: unexpected KV state layout/, /not saved: unexpected KV state layout/]);
});

t.test('a longer prefix replaces the prefixes it extends; the byte budget evicts the least recently used', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-store-'));
  t.teardown(() => rmSync(folder, { recursive: true, force: true }));
  const store = new PromptStore(folder, 'model', 400, () => {});
  store.save(tokens(10), state(0, [1]));
  store.save(tokens(20), state(0, [2]));
  t.equal(store.size, 1, 'the 10-token prefix of the 20-token one is redundant');
  store.save(tokens(20, 500), state(0, [3]));
  store.save(tokens(20, 900), state(0, [4]));
  t.ok(store.size < 3, `within 400 bytes: ${store.size} kept`);
  t.equal(store.longest(tokens(20, 900))?.shared, 20, 'the newest is kept');
});

t.test('files that fail a check are discarded and logged', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-store-'));
  t.teardown(() => rmSync(folder, { recursive: true, force: true }));
  const logged: string[] = [];
  const store = new PromptStore(folder, 'model', 1 << 20, (m) => logged.push(m));
  store.save(tokens(12), state(0, [7, 7]));
  const [name] = readdirSync(join(folder, 'model'));
  writeFileSync(join(folder, 'model', 'truncated.kv'), 'PNSVPC01');
  const again = new PromptStore(folder, 'model', 1 << 20, (m) => logged.push(m));
  t.equal(again.size, 1, 'the truncated file is not indexed');
  t.match(logged, [/truncated\.kv: unreadable header/]);
  t.ok(name.endsWith('.kv'));
  t.notOk(store.longest(tokens(3, 1000)), 'nothing shares a prefix with unrelated tokens');
});
