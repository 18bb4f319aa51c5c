// The environment Claude Code needs to run well against a Pensieve server: where the server is, its key,
// no traffic to Anthropic's other services, an API timeout long enough for a cold prompt on this machine,
// and the server's real context window, so that Claude Code compacts a conversation before the server has
// to refuse it. Plain arithmetic on what the server's /health reports; `pensieve claude` applies it.
//
// What Claude Code honours (read in its 2.1.33x CLI; its docs list the variables under "Environment
// variables"):
// - CLAUDE_CODE_AUTO_COMPACT_WINDOW: the window that auto-compaction plans for; values under 100,000 are
//   taken as 100,000.
// - CLAUDE_AUTOCOMPACT_PCT_OVERRIDE: compaction fires at this percent of the window left once the answer's
//   room, min(max output tokens, 20,000), is taken out, when that is lower than Claude Code's own threshold
//   (13,000 tokens below that). So a window under 100k is reached through the percent.
// - API_TIMEOUT_MS: how long one request may take (300 s by default).

export interface ServerFacts {
  url: string;
  key: string;
  /** Longest prompt + answer one session may have. */
  maxContext: number;
  /** Prompt tokens per second measured on this server; 0 when nothing was measured yet. */
  prefillTokensPerSecond: number;
}

/** Claude Code takes smaller auto-compact windows as this one. */
const CLAUDE_MIN_WINDOW = 100_000;
/** Of the window, Claude Code keeps min(max output tokens, this) for the answer. */
const CLAUDE_ANSWER_ROOM_CAP = 20_000;
/** Its own threshold is this far below the window left for the prompt. */
const CLAUDE_THRESHOLD_GAP = 13_000;
/** Claude Code's max output tokens when CLAUDE_CODE_MAX_OUTPUT_TOKENS is not set (above the cap anyway). */
const CLAUDE_DEFAULT_MAX_OUTPUT = 32_000;
/**
 * Room kept above the compaction threshold: the turn that crosses it adds the last answer and the next
 * message, and the compaction request adds its instructions to the whole conversation.
 */
const HEADROOM_MIN = 4096;
const HEADROOM_FRACTION = 1 / 8;
/** A cold prompt of the whole context, at the measured speed, gets this many times its time. */
const TIMEOUT_FACTOR = 2;
const TIMEOUT_MIN_MS = 300_000;
const TIMEOUT_MAX_MS = 2 * 3600_000;

/** The token count at which Claude Code should compact a conversation on this server. */
export function compactionThreshold(maxContext: number): number {
  return maxContext - Math.max(HEADROOM_MIN, Math.floor(maxContext * HEADROOM_FRACTION));
}

/** API_TIMEOUT_MS: twice a whole-context cold prompt at the measured speed, within 5 min..2 h; 2 h unmeasured. */
export function apiTimeoutMs(facts: Pick<ServerFacts, 'maxContext' | 'prefillTokensPerSecond'>): number {
  if (facts.prefillTokensPerSecond <= 0) return TIMEOUT_MAX_MS;
  const coldMs = (facts.maxContext / facts.prefillTokensPerSecond) * 1000;
  return Math.round(Math.min(TIMEOUT_MAX_MS, Math.max(TIMEOUT_MIN_MS, coldMs * TIMEOUT_FACTOR)));
}

/**
 * The variables to set for Claude Code. Those the user already set (`env`) are kept, but for the server's
 * address and key, which are the point; ANTHROPIC_API_KEY is dropped, as Claude Code would send it instead.
 */
export function claudeEnvironment(facts: ServerFacts, env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const window = Math.max(facts.maxContext, CLAUDE_MIN_WINDOW);
  const maxOutput = Number(env.CLAUDE_CODE_MAX_OUTPUT_TOKENS) || CLAUDE_DEFAULT_MAX_OUTPUT;
  const promptRoom = window - Math.min(maxOutput, CLAUDE_ANSWER_ROOM_CAP);
  const threshold = compactionThreshold(facts.maxContext);
  const defaults: NodeJS.ProcessEnv = {
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    API_TIMEOUT_MS: String(apiTimeoutMs(facts)),
    CLAUDE_CODE_AUTO_COMPACT_WINDOW: String(window),
    // Below Claude Code's own threshold only: it never lowers compaction further than asked.
    ...(threshold < promptRoom - CLAUDE_THRESHOLD_GAP && {
      CLAUDE_AUTOCOMPACT_PCT_OVERRIDE: (Math.floor((10_000 * threshold) / promptRoom) / 100).toFixed(2),
    }),
  };
  const { ANTHROPIC_API_KEY: _apiKey, ...rest } = env;
  return { ...defaults, ...rest, ANTHROPIC_BASE_URL: facts.url, ANTHROPIC_AUTH_TOKEN: facts.key };
}
