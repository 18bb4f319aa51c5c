// The HTTP server: Fastify, bound to loopback by default. Routes get the engine through `state`,
// which is filled in once the model has loaded, so /health can answer while it loads.
import Fastify, { type FastifyInstance } from 'fastify';
import { randomBytes } from 'node:crypto';
import type { PensieveConfig } from '../config.js';
import type { Engine } from '../engine/engine.js';

export interface ServerState {
  engine?: Engine;
  /** Set when loading the model failed. */
  loadError?: Error;
}

export function buildServer(config: PensieveConfig, state: ServerState): FastifyInstance {
  const app = Fastify({
    logger: { level: config.log.level },
    bodyLimit: config.server.bodyLimitMb * 1024 * 1024,
    genReqId: () => `req_${randomBytes(12).toString('hex')}`,
  });
  app.addHook('onSend', async (request, reply) => {
    reply.header('request-id', request.id);
  });

  app.get('/health', async (_request, reply) => {
    if (state.engine?.alive) {
      const { model } = state.engine;
      return { status: 'ok', model: model.description, slots: state.engine.settings.slots, ...state.engine.status() };
    }
    if (state.loadError) return reply.code(503).send({ status: 'error', error: state.loadError.message });
    return reply.code(503).send({ status: 'loading' });
  });
  return app;
}
