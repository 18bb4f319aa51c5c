// The HTTP server: Fastify, bound to loopback by default, speaking the Anthropic Messages API.
// Routes reach the engine through `state`, which is filled in once the model has loaded, so that
// /health (and count_tokens, which needs only the vocabulary) answer while it loads.
import Fastify, { type FastifyInstance } from 'fastify';
import { fastifySSE } from '@fastify/sse';
import { randomBytes } from 'node:crypto';
import type { PensieveConfig } from '../config.js';
import type { Engine } from '../engine/engine.js';
import type { PreparePool } from '../chat/prepare-pool.js';
import { registerErrorHandling } from '../api/errors.js';
import { registerAuth } from '../api/auth.js';
import { registerModelRoutes, type ModelInfo } from '../api/models.js';
import { registerMessageRoutes } from '../api/messages.js';
import { fastifyAjvOptions } from '../api/schemas.js';

export interface ServerState {
  engine?: Engine;
  /** Set when loading the model failed. */
  loadError?: Error;
}

export interface ServerOptions {
  config: PensieveConfig;
  state: ServerState;
  pool: PreparePool;
  model: ModelInfo;
  /** Seconds between SSE pings while nothing else is sent. */
  pingSeconds?: number;
}

export async function buildServer({ config, state, pool, model, pingSeconds }: ServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: { level: config.log.level },
    bodyLimit: config.server.bodyLimitMb * 1024 * 1024,
    genReqId: () => `req_${randomBytes(12).toString('hex')}`,
    ajv: fastifyAjvOptions, // reject wrong types instead of coercing them
  });
  app.addHook('onSend', async (request, reply) => {
    reply.header('request-id', request.id);
  });
  await app.register(fastifySSE, { heartbeatInterval: 0 }); // the API's own ping events keep streams alive
  registerErrorHandling(app);
  registerAuth(app, { apiKeys: config.server.apiKeys, requireKeyOnLoopback: config.server.requireKeyOnLoopback });

  app.get('/health', async (_request, reply) => {
    if (state.engine?.alive) {
      return { status: 'ok', model: model.id, slots: state.engine.settings.slots, ...state.engine.status() };
    }
    if (state.loadError) return reply.code(503).send({ status: 'error', error: state.loadError.message });
    return reply.code(503).send({ status: 'loading' });
  });
  registerModelRoutes(app, () => model, config.model.aliases);
  registerMessageRoutes(app, { engine: () => state.engine, pool, pingSeconds });
  return app;
}
