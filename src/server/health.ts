// GET /health: whether the model is loaded, and a summary of the server's state for `pensieve status`.
import type { FastifyInstance } from 'fastify';
import type { Engine } from '../engine/engine.js';
import type { ServerState } from './app.js';

/** Seconds of history behind tokensPerSecond. */
const RATE_WINDOW_S = 10;

/**
 * Generated tokens per second over the last few seconds, from the engine's decoded-token counter
 * sampled once a second (a lifetime average would hide that the server is idle now).
 */
class RecentTokenRate {
  private readonly samples: { at: number; tokens: number }[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly engine: () => Engine | undefined) {
    this.timer = setInterval(() => this.sample(), 1000).unref();
  }

  private sample(): void {
    const engine = this.engine();
    if (!engine?.alive) return;
    this.samples.push({ at: performance.now(), tokens: engine.status().decodedTokens });
    if (this.samples.length > RATE_WINDOW_S + 1) this.samples.shift();
  }

  perSecond(): number {
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (!first || !last || last === first) return 0;
    return ((last.tokens - first.tokens) >>> 0) / ((last.at - first.at) / 1000); // the counter wraps at 2^31
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

export function registerHealth(app: FastifyInstance, state: ServerState, modelId: string): void {
  const rate = new RecentTokenRate(() => state.engine);
  app.addHook('onClose', async () => rate.stop());
  app.get('/health', async (_request, reply) => {
    const engine = state.engine;
    if (engine?.alive) {
      const status = engine.status();
      return {
        status: 'ok',
        model: modelId,
        slots: engine.settings.slots,
        maxContext: engine.settings.maxContext,
        poolTokens: engine.settings.poolTokens,
        kvType: engine.settings.kvType,
        ...status,
        // Measured on the prompts computed so far (0 until then).
        prefillTokensPerSecond: status.prefillMs > 0 ? Math.round(status.prefilledTokens / (status.prefillMs / 1000)) : 0,
        tokensPerSecond: Math.round(rate.perSecond() * 10) / 10,
        cacheHitRate: status.promptTokens > 0 ? status.cachedPromptTokens / status.promptTokens : 0,
        rssBytes: process.memoryUsage.rss(),
        uptime: Math.round(process.uptime()),
      };
    }
    if (state.loadError) return reply.code(503).send({ status: 'error', error: state.loadError.message });
    return reply.code(503).send({ status: 'loading' });
  });
}
