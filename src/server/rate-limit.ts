// Optional per-key rate limit on the API routes (@fastify/rate-limit): over the limit, a 429
// rate_limit_error in the API's shape with retry-after, which Anthropic clients wait out and retry.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import { ApiError } from '../api/errors.js';
import { validatedKey } from '../api/auth.js';

/**
 * The limit's bucket: the key the request authenticated with (checked by the auth hook, which runs first),
 * else the client address. A presented key that is not valid never picks the bucket, so made-up keys
 * cannot buy fresh budgets.
 */
function bucketOf(request: FastifyRequest): string {
  const key = validatedKey(request);
  return key === undefined ? `ip:${request.ip}` : `key:${key}`;
}

/** `perMinute` requests per minute to /v1 routes per bucket; 0 adds nothing. */
export async function registerRateLimit(app: FastifyInstance, perMinute: number): Promise<void> {
  if (perMinute === 0) return;
  await app.register(rateLimit, {
    max: perMinute,
    timeWindow: 60_000,
    keyGenerator: bucketOf,
    allowList: (request) => !/^\/v1(\/|$)/.test(request.routeOptions.url ?? ''),
    errorResponseBuilder: (_request, context) =>
      new ApiError(429, 'rate_limit_error', `rate limit exceeded: ${context.max} requests per minute; retry in ${context.after}`),
  });
}
