// Structured JSON logs: Fastify's pino logger, each request's lines tagged with the id that its
// `request-id` response header carries. Prompts stay out of the logs unless log.prompts asks for them.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import type { DestinationStream } from 'pino';
import type { PensieveConfig } from '../config.js';

/** Fastify options for the logger and request ids; `stream` replaces stdout (tests read the lines). */
export function loggerOptions(config: PensieveConfig, stream?: DestinationStream): FastifyServerOptions {
  return {
    logger: { level: config.log.level, ...(stream && { stream }) },
    genReqId: () => `req_${randomBytes(12).toString('hex')}`, // logged as reqId
  };
}

/** Sets the `request-id` header on every response, and logs the prompts of message requests when asked to. */
export function registerRequestLogging(app: FastifyInstance, config: PensieveConfig): void {
  app.addHook('onSend', async (request, reply) => {
    reply.header('request-id', request.id);
  });
  if (!config.log.prompts) return;
  // preHandler: after validation, so only well-formed bodies are logged.
  app.addHook('preHandler', async (request) => {
    if (!request.routeOptions.url?.startsWith('/v1/messages')) return;
    const { system, messages, tools } = request.body as { system?: unknown; messages?: unknown; tools?: unknown };
    request.log.info({ prompt: { system, messages, tools } }, 'prompt');
  });
}
