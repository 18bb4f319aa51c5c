// The KV pool's cell accounting alone (no llama.cpp): cells per slot, shared prefixes, truncation.
import t from 'tap';
import { KvPool } from '../src/engine/kv-pool.js';

t.test('cells grow with each slot and come back when it is emptied or truncated', async (t) => {
  const pool = new KvPool(100, 3);
  pool.extend(0, 30);
  pool.extend(1, 20);
  t.equal(pool.used, 50);
  t.equal(pool.free, 50);
  pool.extend(0, 5);
  t.equal(pool.length(0), 35);
  pool.truncate(0, 10);
  t.equal(pool.used, 30, 'positions from 10 on are gone');
  pool.clear(1);
  t.equal(pool.used, 10);
  t.equal(pool.length(1), 0);
});

t.test('a shared prefix takes no new cells and stays while any slot holds it', async (t) => {
  const pool = new KvPool(100, 3);
  pool.extend(0, 40);
  pool.share(0, 1, 30);
  t.equal(pool.used, 40, 'the copy shares the donor cells');
  t.equal(pool.length(1), 30);
  t.equal(pool.exclusive(0), 10, 'only the donor tail is its own');
  t.equal(pool.exclusive(1), 0);
  pool.extend(1, 5);
  t.equal(pool.used, 45, 'the copy computes its own tail');
  pool.clear(0);
  t.equal(pool.used, 35, 'the donor tail goes, the shared 30 stay with slot 1');
  t.equal(pool.exclusive(1), 35);
});

t.test('a slot that truncates a group another slot still holds grows in new cells', async (t) => {
  const pool = new KvPool(100, 2);
  pool.extend(0, 20);
  pool.share(0, 1, 20);
  pool.truncate(0, 10);
  t.equal(pool.used, 20, 'slot 1 still holds positions 10..20 of those cells');
  pool.extend(0, 10);
  t.equal(pool.used, 30, 'slot 0 positions 10..20 are new cells');
  pool.clear(1);
  t.equal(pool.used, 20);
  pool.clear(0);
  t.equal(pool.used, 0);
});

t.test('sharing into a slot replaces what it held', async (t) => {
  const pool = new KvPool(100, 2);
  pool.extend(0, 10);
  pool.extend(1, 25);
  pool.share(0, 1, 10);
  t.equal(pool.used, 10);
  t.equal(pool.length(1), 10);
});
