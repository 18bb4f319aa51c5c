// The HTTP server: Fastify, bound to loopback by default, speaking the Anthropic Messages API.
// Routes reach the engine through `state`, which is filled in once the model has loaded, so that
// /health (and count_tokens, which needs only the vocabulary) answer while it loads.
import Fastify, { type FastifyInstance } from 'fastify';
import { fastifySSE } from '@fastify/sse';
import cors from '@fastify/cors';
import type { DestinationStream } from 'pino';
import type { PensieveConfig } from '../config.js';
import type { Engine } from '../engine/engine.js';
import type { PreparePool } from '../chat/prepare-pool.js';
import { frameworkErrorOptions, registerErrorHandling } from '../api/errors.js';
import { registerAuth } from '../api/auth.js';
import { registerModelRoutes, type ModelInfo } from '../api/models.js';
import { registerMessageRoutes } from '../api/messages.js';
import { fastifyAjvOptions } from '../api/schemas.js';
import { loggerOptions, registerRequestLogging } from './logging.js';
import { registerBodyParsing } from './body.js';
import { registerHostCheck } from './host-check.js';
import { registerRateLimit } from './rate-limit.js';
import { registerHealth } from './health.js';
import { Metrics } from './metrics.js';
import { registerGracefulClose } from './shutdown.js';
import { assertSafeExposure } from './exposure.js';
import { registerDashboard } from './dashboard/route.js';

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
  /** Where the JSON log lines go instead of stdout. */
  logStream?: DestinationStream;
}

/** Throws ConfigError when the config would expose the server with a well-known key. */
export async function buildServer({ config, state, pool, model, pingSeconds, logStream }: ServerOptions): Promise<FastifyInstance> {
  assertSafeExposure(config);
  const { server } = config;
  const bodyLimit = server.bodyLimitMb * 1024 * 1024;
  const app = Fastify({
    ...loggerOptions(config, logStream),
    ...frameworkErrorOptions,
    bodyLimit,
    ajv: fastifyAjvOptions, // reject wrong types instead of coercing them
    return503OnClosing: false, // registerGracefulClose answers in the API's shape instead
  });
  registerRequestLogging(app, config);
  registerBodyParsing(app, bodyLimit);
  await app.register(fastifySSE, { heartbeatInterval: 0 }); // the API's own ping events keep streams alive
  registerErrorHandling(app);
  // Hooks run in this order: Host check, then the closing check, then the key, then the rate limit.
  registerHostCheck(app, server.host, server.allowedHosts);
  const stop = registerGracefulClose(app, server.shutdownGraceSeconds);
  registerAuth(app, { apiKeys: server.apiKeys, requireKeyOnLoopback: server.requireKeyOnLoopback });
  await registerRateLimit(app, server.rateLimitPerMinute);
  if (server.corsOrigins.length > 0) await app.register(cors, { origin: server.corsOrigins });

  const metrics = new Metrics(() => state.engine);
  metrics.register(app);
  registerHealth(app, state, model.id);
  registerModelRoutes(app, () => model, config.model.aliases);
  const dashboard = registerDashboard(app, { engine: () => state.engine, loadError: () => state.loadError, modelId: model.id, logPrompts: config.log.prompts });
  registerMessageRoutes(app, { engine: () => state.engine, pool, pingSeconds, metrics: (request) => dashboard.recorder(request, metrics.request()), stop, logPrompts: config.log.prompts });
  return app;
}
