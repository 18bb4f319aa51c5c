// The environment `pensieve claude` gives Claude Code, alone (plain arithmetic on the server's facts).
import t from 'tap';
import { apiTimeoutMs, claudeEnvironment, compactionThreshold } from '../src/cli/claude-env.js';

const facts = { url: 'http://127.0.0.1:7777', key: 'k', maxContext: 16384, prefillTokensPerSecond: 800 };

t.test('a window under Claude Code\'s 100k minimum is reached through the compaction percent', async (t) => {
  const env = claudeEnvironment(facts, { CLAUDE_CODE_MAX_OUTPUT_TOKENS: '48' });
  t.equal(env.CLAUDE_CODE_AUTO_COMPACT_WINDOW, '100000');
  t.equal(compactionThreshold(16384), 12288, '4096 tokens of headroom');
  // Claude Code: floor((100000 - 48) * pct / 100) must not pass the threshold, and come close to it.
  const pct = Number(env.CLAUDE_AUTOCOMPACT_PCT_OVERRIDE);
  const fires = Math.floor((100000 - 48) * (pct / 100));
  t.ok(fires <= 12288 && fires > 12288 - 100, `compaction fires at ${fires} tokens`);
  t.equal(claudeEnvironment(facts, {}).CLAUDE_AUTOCOMPACT_PCT_OVERRIDE, '15.36', 'with the default answer room of 20k: 12288 / 80000');
});

t.test('a window of 100k or more is the window itself, with Claude Code\'s own threshold when it is lower', async (t) => {
  const env = claudeEnvironment({ ...facts, maxContext: 131072 }, {});
  t.equal(env.CLAUDE_CODE_AUTO_COMPACT_WINDOW, '131072');
  t.equal(env.CLAUDE_AUTOCOMPACT_PCT_OVERRIDE, undefined, '131072 - 20000 - 13000 is below 131072 - 16384');
  const big = claudeEnvironment({ ...facts, maxContext: 400_000 }, {});
  t.ok(Number(big.CLAUDE_AUTOCOMPACT_PCT_OVERRIDE) > 0, 'a large window needs more headroom than Claude Code keeps: the percent again');
});

t.test('the server address and key win; the user\'s own settings stay; ANTHROPIC_API_KEY goes', async (t) => {
  const env = claudeEnvironment(facts, {
    ANTHROPIC_BASE_URL: 'https://api.anthropic.com', ANTHROPIC_AUTH_TOKEN: 'x', ANTHROPIC_API_KEY: 'sk-ant-...',
    API_TIMEOUT_MS: '5', CLAUDE_CODE_AUTO_COMPACT_WINDOW: '200000', HOME: '/home/me',
  });
  t.match(env, { ANTHROPIC_BASE_URL: facts.url, ANTHROPIC_AUTH_TOKEN: 'k', API_TIMEOUT_MS: '5', CLAUDE_CODE_AUTO_COMPACT_WINDOW: '200000', HOME: '/home/me', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' });
  t.notOk('ANTHROPIC_API_KEY' in env);
});

t.test('the API timeout covers a cold prompt of the whole context at the measured speed', async (t) => {
  t.equal(apiTimeoutMs({ maxContext: 131072, prefillTokensPerSecond: 100 }), 2 * 1310.72 * 1000, 'twice 1311 s');
  t.equal(apiTimeoutMs({ maxContext: 16384, prefillTokensPerSecond: 40000 }), 300_000, 'never under Claude Code\'s default');
  t.equal(apiTimeoutMs({ maxContext: 131072, prefillTokensPerSecond: 0 }), 7_200_000, 'unmeasured: two hours');
});
