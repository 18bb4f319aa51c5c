import t from 'tap';
import { commonPrefixLength, SlotPrefixCache } from '../src/engine/prefix-cache.js';

const tokens = (...values: number[]): Int32Array => Int32Array.from(values);

t.test('commonPrefixLength', async (t) => {
  t.equal(commonPrefixLength(tokens(1, 2, 3), tokens(1, 2, 4)), 2);
  t.equal(commonPrefixLength(tokens(), tokens(1)), 0);
  t.equal(commonPrefixLength(tokens(5, 6), tokens(5, 6, 7)), 2);
});

t.test('a request goes to the free slot holding its longest prefix', async (t) => {
  const cache = new SlotPrefixCache(3);
  cache.store(0, tokens(1, 2, 9), 10);
  cache.store(1, tokens(1, 2, 3, 4), 20);
  t.same(cache.place(tokens(1, 2, 3, 4, 5), [0, 1, 2]), { slot: 1, cached: 4 });
  t.same(cache.place(tokens(1, 2, 3, 4, 5), [0, 2]), { slot: 0, cached: 2 }, 'only among free slots');
});

t.test('the last prompt token is always computed again', async (t) => {
  const cache = new SlotPrefixCache(1);
  cache.store(0, tokens(1, 2, 3, 4), 1);
  t.same(cache.place(tokens(1, 2, 3), [0]), { slot: 0, cached: 2 });
  t.same(cache.place(tokens(1, 2, 3, 4), [0]), { slot: 0, cached: 3 });
});

t.test('with no match, the least recently used slot is taken first', async (t) => {
  const cache = new SlotPrefixCache(3);
  cache.store(0, tokens(7, 7), 30);
  cache.store(1, tokens(8, 8), 10);
  cache.store(2, tokens(9, 9), 20);
  t.same(cache.place(tokens(1, 2), [0, 1, 2]), { slot: 1, cached: 0 });
  cache.clear(0);
  t.same(cache.place(tokens(7, 7, 1), [0, 2]), { slot: 0, cached: 0 }, 'a cleared slot holds nothing (and, empty, is taken first)');
});

t.test('with no useful prefix, an empty slot is taken before one holding a prefix; a useful prefix wins', async (t) => {
  const cache = new SlotPrefixCache(4, 4);
  cache.store(0, tokens(50), 1);
  cache.store(1, tokens(51), 2);
  t.same(cache.place(tokens(1, 2), [0, 1, 2, 3]), { slot: 2, cached: 0 }, 'the first empty slot');
  t.same(cache.place(tokens(1, 2), [0, 1]), { slot: 0, cached: 0 }, 'no empty slot: the least recently used');
  cache.store(3, tokens(1, 2, 3), 9);
  t.same(cache.place(tokens(1, 2, 3, 4), [0, 2, 3]), { slot: 3, cached: 3 }, 'a short prefix decides between slots as good otherwise');
  cache.store(0, tokens(1, 2, 3, 4, 5), 9);
  t.same(cache.place(tokens(1, 2, 3, 4, 5, 6), [0, 2, 3]), { slot: 0, cached: 5 }, 'a useful prefix wins');
  t.same(cache.reclaimOrder([0, 1, 3]), [1, 0, 3], 'reclaimed least recently used first');
});
