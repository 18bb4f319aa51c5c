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

/** The keys a request presents, from either header (both when both are sent). */
export function presentedKeys(request: FastifyRequest): string[] {
  const keys: string[] = [];
  const first = (h: string | string[] | undefined) => (Array.isArray(h) ? h[0] : h);
  const apiKey = first(request.headers['x-api-key']);
  if (apiKey) keys.push(apiKey);
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(first(request.headers.authorization) ?? '');
  if (bearer) keys.push(bearer[1]!);
  return keys;
}

/**
 * Adds an onRequest hook that rejects requests to /v1 routes without a valid key (401
 * authentication_error). Call it on the root instance. Routes outside /v1 (/health) are open;
 * a request that matches no route is checked too, so unknown paths reveal nothing without a key.
 */
export function registerAuth(app: FastifyInstance, opts: AuthOptions): void {
  // Compare SHA-256 digests in constant time: equal lengths, and neither content nor length leaks.
  const expected = opts.apiKeys.map(digest);
  if (expected.length === 0) return;
  app.addHook('onRequest', async (request) => {
    // The matched route's pattern, not the raw URL, so encodings (/%761/...) cannot dodge the check.
    const route = request.routeOptions.url;
    if (route !== undefined && !/^\/v1(\/|$)/.test(route)) return;
    if (!opts.requireKeyOnLoopback && isLoopback(request.socket.remoteAddress)) return;
    const keys = presentedKeys(request);
    if (keys.length === 0)
      throw new ApiError(401, 'authentication_error', 'missing API key: send it as x-api-key or Authorization: Bearer');
    let ok = false;
    for (const key of keys) {
      const d = digest(key);
      for (const e of expected) ok = timingSafeEqual(d, e) || ok;
    }
    if (!ok) throw new ApiError(401, 'authentication_error', 'invalid x-api-key');
  });
}
