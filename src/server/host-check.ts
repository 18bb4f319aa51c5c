// Host-header allow-list against DNS rebinding: a web page whose own name is made to resolve to this
// machine sends requests with its name in Host, which is refused here. Names that only ever resolve
// to this machine (localhost, *.localhost) and IP addresses (no DNS involved) are always accepted.
import { isIP } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { ApiError } from '../api/errors.js';

/** The name in a Host header: without the port, the brackets of an IPv6 address, a trailing dot, case. */
export function hostName(header: string): string {
  const name = header.startsWith('[') ? header.slice(1, header.indexOf(']')) : header.replace(/:\d*$/, '');
  return name.replace(/\.$/, '').toLowerCase();
}

/**
 * A predicate over Host names. `allowed` entries are names, `.example.com` for that name and its
 * subdomains, or `*` for any; `bindHost` (server.host) is accepted too.
 */
export function hostAllowList(bindHost: string, allowed: string[]): (name: string) => boolean {
  const entries = [bindHost, ...allowed].map((e) => e.toLowerCase());
  if (entries.includes('*')) return () => true;
  const exact = new Set(entries.filter((e) => !e.startsWith('.')).map(hostName));
  const suffixes = entries.filter((e) => e.startsWith('.'));
  return (name) =>
    name === 'localhost' ||
    name.endsWith('.localhost') ||
    isIP(name) !== 0 ||
    exact.has(name) ||
    suffixes.some((s) => name === s.slice(1) || name.endsWith(s));
}

/** Refuses (403 permission_error) every request whose Host is not allowed; a request without Host passes (no browser sends one). */
export function registerHostCheck(app: FastifyInstance, bindHost: string, allowed: string[]): void {
  const isAllowed = hostAllowList(bindHost, allowed);
  app.addHook('onRequest', async (request) => {
    const header = request.headers.host;
    if (header === undefined || isAllowed(hostName(header))) return;
    throw new ApiError(403, 'permission_error', `host '${hostName(header)}' is not allowed: add it to server.allowed_hosts`);
  });
}
