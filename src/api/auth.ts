// API key check for the API routes, as Anthropic clients send keys: `x-api-key: KEY`
// (ANTHROPIC_API_KEY) or `Authorization: Bearer KEY` (ANTHROPIC_AUTH_TOKEN).
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from './errors.js';

export interface AuthOptions {
  /** Accepted keys; empty means no key is needed. */
  apiKeys: string[];
  /** false: requests from a loopback address need no key. */
  requireKeyOnLoopback: boolean;
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** 127.0.0.0/8, ::1, and IPv4-mapped 127.x as a dual-stack socket reports it. */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4) || address === '::1';
}

/** A key as a request presents it, and the header it came in. */
interface PresentedKey {
  key: string;
  header: 'Authorization: Bearer' | 'x-api-key';
}

/**
 * The key a request authenticates with. One header decides: `Authorization: Bearer` when it is sent, else
 * `x-api-key`. Claude Code sends both when ANTHROPIC_AUTH_TOKEN and ANTHROPIC_API_KEY are both set, and
 * then means the token (the key for this server, while the environment may hold a key for Anthropic's).
 */
function presentedKey(request: FastifyRequest): PresentedKey | undefined {
  const first = (h: string | string[] | undefined) => (Array.isArray(h) ? h[0] : h);
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(first(request.headers.authorization) ?? '');
  if (bearer) return { key: bearer[1]!, header: 'Authorization: Bearer' };
  const apiKey = first(request.headers['x-api-key']);
  return apiKey ? { key: apiKey, header: 'x-api-key' } : undefined;
}

/** Per request that authenticated with a valid key: that key's index in server.api_keys. */
const validatedKeys = new WeakMap<FastifyRequest, number>();

/** The index in server.api_keys of the key the request authenticated with; undefined when it presented no valid one (or none are configured). */
export function validatedKey(request: FastifyRequest): number | undefined {
  return validatedKeys.get(request);
}

/** Routes that need the key: the API's, and the dashboard's events (its page and files hold no data). */
const PROTECTED = /^\/v1(\/|$)|^\/dashboard\/events$/;

/**
 * Adds an onRequest hook that rejects requests to /v1 routes and the dashboard's events without a valid key
 * (401 authentication_error). Call it on the root instance. Other routes (/health, the dashboard's page) are
 * open; a request that matches no route is checked too, so unknown paths reveal nothing without a key.
 */
export function registerAuth(app: FastifyInstance, opts: AuthOptions): void {
  // Compare SHA-256 digests in constant time: equal lengths, and neither content nor length leaks.
  const expected = opts.apiKeys.map(digest);
  if (expected.length === 0) return;
  app.addHook('onRequest', async (request) => {
    // The matched route's pattern, not the raw URL, so encodings (/%761/...) cannot dodge the check.
    const route = request.routeOptions.url;
    if (route !== undefined && !PROTECTED.test(route)) return;
    const presented = presentedKey(request);
    let index = -1;
    if (presented) {
      const d = digest(presented.key);
      expected.forEach((e, i) => {
        if (timingSafeEqual(d, e)) index = i;
      });
    }
    if (index >= 0) validatedKeys.set(request, index);
    if (!opts.requireKeyOnLoopback && isLoopback(request.socket.remoteAddress)) return;
    if (!presented)
      throw new ApiError(401, 'authentication_error', 'missing API key: send it as x-api-key or Authorization: Bearer');
    if (index < 0) {
      const message = presented.header === 'x-api-key' ? 'invalid x-api-key' : 'invalid bearer token in Authorization';
      throw new ApiError(401, 'authentication_error', message);
    }
  });
}
