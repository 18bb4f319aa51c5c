// The catalogue (src/model/catalogue.ts): every alias resolves to a hub file, every entry meets the
// criteria the default was chosen by (README, Models), and the memory plan gives each entry a session of
// the promised length on the machines it is recommended for.
import t from 'tap';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import {
  CATALOGUE,
  DEFAULT_ALIAS,
  DEFAULT_PLAN_ENGINE,
  expectedContext,
  FAMILY_FORMATS,
  LEGACY_ALIASES,
  machineOf,
  planEntry,
} from '../src/model/catalogue.js';
import { DEFAULT_MODEL, MODEL_ALIASES, parseHubRef } from '../src/model/hub.js';

t.test('aliases resolve to hub files', async (t) => {
  t.equal(new Set(CATALOGUE.map((e) => e.alias)).size, CATALOGUE.length, 'aliases are unique');
  for (const e of CATALOGUE) {
    t.equal(MODEL_ALIASES[e.alias], `${e.repo}/${e.file}`, e.alias);
    t.same(parseHubRef(e.alias), { repo: e.repo, file: e.file }, `${e.alias} parses as a hub file`);
    t.ok(FAMILY_FORMATS[e.family], `${e.alias}: a family with a tool-call format`);
  }
  t.equal(DEFAULT_MODEL, DEFAULT_ALIAS);
  t.equal(DEFAULT_MODEL, 'qwen3-4b');
  t.same(parseHubRef('phi-3-mini'), { repo: 'second-state/Phi-3-mini-128k-instruct-GGUF', file: 'Phi-3-mini-128k-instruct-Q4_K_M.gguf' }, 'the old default stays an alias');
  for (const alias of Object.keys(LEGACY_ALIASES)) t.notOk(CATALOGUE.some((e) => e.alias === alias), `${alias} is not in the catalogue`);
});

t.test('every entry has grouped-query attention and a trained context of 128k or more', async (t) => {
  for (const { alias, shape } of CATALOGUE) {
    t.ok(shape.kvHeads < shape.heads && shape.heads % shape.kvHeads === 0, `${alias}: ${shape.heads} query heads share ${shape.kvHeads} KV heads`);
    t.ok(shape.context >= 131072, `${alias}: trained for ${shape.context} tokens`);
  }
});

t.test('the per-machine plans use the built-in engine settings', async (t) => {
  // An explicit (empty) config file: the user's file is not read, so these are config/pensieve.toml's values.
  const dir = t.testdir({ 'empty.toml': '' });
  const { slots, maxContext, poolTokens, kvType, ubatchSize, flashAttention } = loadConfig({ env: {}, file: join(dir, 'empty.toml') }).config.engine;
  t.same(DEFAULT_PLAN_ENGINE, { slots, maxContext, poolTokens, kvType, ubatchSize, flashAttention });
});

t.test('each entry fits the machines it is recommended for, with one long session', async (t) => {
  for (const e of CATALOGUE) {
    for (const cls of e.machines) {
      const plan = planEntry(e, machineOf(cls));
      t.ok(plan.fits, `${e.alias} fits ${cls}`);
      // Claude Code assumes 100k tokens; an 8 GiB machine gets what is left beside the weights.
      const floor = cls === '8 GiB' ? 65536 : 100_000;
      t.ok(plan.maxContext >= floor, `${e.alias} on ${cls}: one session of ${expectedContext(plan)} (at least ${floor})`);
    }
  }
});

t.test('the default on 16 GiB: at least 100k tokens for one session', async (t) => {
  const plan = planEntry(CATALOGUE.find((e) => e.alias === DEFAULT_ALIAS)!, machineOf('16 GiB'));
  t.ok(plan.fits);
  t.equal(plan.kvType, 'q8_0', 'q8_0 KV: f16 would give 81k');
  t.ok(plan.maxContext >= 150_000, `one session of ${plan.maxContext} tokens`);
  t.equal(expectedContext(plan), '153k q8_0');
  t.equal(plan.kvBytesPerToken, 36 * 2 * 8 * (128 / 32) * 34, '36 layers x K and V x 8 KV heads of 128, in q8_0 blocks: 76.5 KiB');
});
