// Host-header allow-list against DNS rebinding: a web page whose own name is made to resolve to this
// machine sends requests with its name in Host, which is refused here. Names that only ever resolve
// to this machine (localhost, *.localhost) and IP addresses (no DNS involved) are always accepted.
import { isIP } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { ApiError } from '../api/errors.js';

/** A name as compared: lower case, without a trailing dot or the brackets of an IPv6 address. */
const normalized = (name: string): string => name.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '').toLowerCase();

/**
 * The name in a Host header (RFC 9110: host[:port], the host an IPv6 address in brackets or a DNS name or
 * IPv4 address), normalized; undefined when the header is not of that form (`[127.0.0.1]evil.com` is not).
 */
export function hostName(header: string): string | undefined {
  const match = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9._-]+))(?::\d*)?$/i.exec(header);
  if (!match) return undefined;
  if (match[1] !== undefined && isIP(match[1]) !== 6) return undefined;
  return normalized(match[1] ?? match[2]!);
}

/**
 * A predicate over Host names. `allowed` entries are names, `.example.com` for that name and its
 * subdomains, or `*` for any; `bindHost` (server.host) is accepted too.
 */
export function hostAllowList(bindHost: string, allowed: string[]): (name: string) => boolean {
  const entries = [bindHost, ...allowed].map(normalized);
  if (entries.includes('*')) return () => true;
  const exact = new Set(entries.filter((e) => !e.startsWith('.')));
  const suffixes = entries.filter((e) => e.startsWith('.'));
  return (name) =>
    name === 'localhost' ||
    name.endsWith('.localhost') ||
    isIP(name) !== 0 ||
    exact.has(name) ||
    suffixes.some((s) => name === s.slice(1) || name.endsWith(s));
}

/**
 * Refuses every request whose Host is not allowed (403 permission_error) or not a host at all (400); a
 * request without Host passes (no browser sends one).
 */
export function registerHostCheck(app: FastifyInstance, bindHost: string, allowed: string[]): void {
  const isAllowed = hostAllowList(bindHost, allowed);
  app.addHook('onRequest', async (request) => {
    const header = request.headers.host;
    if (header === undefined) return;
    const name = hostName(header);
    if (name === undefined) throw new ApiError(400, 'invalid_request_error', `the Host header is not a host name or address: ${JSON.stringify(header)}`);
    if (!isAllowed(name)) throw new ApiError(403, 'permission_error', `host '${name}' is not allowed: add it to server.allowed_hosts`);
  });
}
