// Image blocks with a URL source, fetched (only when api.fetch_image_urls is on) and turned into base64
// sources before the request is prepared. A local server that fetches what it is told to can be made to
// reach the machines around it (SSRF), so a fetch goes only to public addresses, checked on the address the
// connection is made to (a name that resolves to a private address, or that changes what it resolves to
// between a check and the connection, is refused), follows no redirects, and stops at a size and a time limit.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { ApiError } from './errors.js';
import { sniffMediaType, type ImageOptions } from './images.js';
import type { ContentBlockParam, CountTokensRequest, ImageBlockParam } from './schemas.js';

/** Seconds a fetch may take, connection to last byte. */
export const IMAGE_FETCH_SECONDS = 10;

const invalid = (message: string): ApiError => new ApiError(400, 'invalid_request_error', message);

/** Addresses a fetch never reaches: loopback, private, link-local, shared, multicast, reserved, and the like. */
const NOT_PUBLIC = new BlockList();
for (const [net, prefix] of [['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24], ['203.0.113.0', 24],
  ['224.0.0.0', 4], ['240.0.0.0', 4]] as const) NOT_PUBLIC.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [['::', 128], ['::1', 128], ['64:ff9b::', 96], ['100::', 64], ['2001:db8::', 32],
  ['2002::', 16], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8]] as const) NOT_PUBLIC.addSubnet(net, prefix, 'ipv6');

/** Whether a fetch may connect to the address; an IPv4-mapped IPv6 address is judged as its IPv4 address (BlockList would match every IPv4 address against a ::ffff:0:0/96 rule). */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return isPublicAddress(mapped[1]!);
  return !NOT_PUBLIC.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** dns.lookup, refusing names that resolve to an address a fetch may not reach: the check the connection itself uses. */
const publicLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
    if (err) return callback(err, '', 0);
    const allowed = addresses.filter((a) => isPublicAddress(a.address));
    if (allowed.length === 0) return callback(Object.assign(new Error(`${hostname} resolves to no public address`), { code: 'ENOTPUBLIC' }), '', 0);
    if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, allowed);
    callback(null, allowed[0]!.address, allowed[0]!.family);
  });
};

export interface FetchedImage {
  mediaType: string;
  bytes: Buffer;
}

/** Fetches an image URL within the limits; a failure is a 400 naming `where`. */
export function fetchImage(url: string, where: string, maxBytes: number): Promise<FetchedImage> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return Promise.reject(invalid(`${where}.source.url: not a valid URL`));
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    return Promise.reject(invalid(`${where}.source.url: only http and https URLs are fetched`));
  }
  // An address written into the URL is never looked up: check it here.
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host) !== 0 && !isPublicAddress(host)) {
    return Promise.reject(invalid(`${where}.source.url: ${host} is not a public address, which this server does not fetch from`));
  }
  const failed = (why: string): ApiError => invalid(`${where}.source.url: the image could not be fetched: ${why}`);
  return new Promise((resolve, reject) => {
    const get = parsed.protocol === 'https:' ? https.get : http.get;
    const request = get(parsed, { lookup: publicLookup, timeout: IMAGE_FETCH_SECONDS * 1000, headers: { accept: 'image/*' } }, (response) => {
      const status = response.statusCode ?? 0;
      if (status !== 200) {
        response.resume();
        return reject(failed(status >= 300 && status < 400 ? `redirected (${status}), and redirects are not followed` : `HTTP ${status}`));
      }
      const declared = Number(response.headers['content-length'] ?? 0);
      if (declared > maxBytes) {
        request.destroy();
        return reject(failed(`it is ${declared} bytes, over the limit of ${maxBytes} bytes (api.max_image_mb)`));
      }
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes) {
          request.destroy();
          reject(failed(`it is over the limit of ${maxBytes} bytes (api.max_image_mb)`));
        } else chunks.push(chunk);
      });
      response.on('end', () => {
        const mediaType = String(response.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        resolve({ mediaType, bytes: Buffer.concat(chunks) });
      });
      response.on('error', (err) => reject(failed(err.message)));
    });
    const deadline = setTimeout(() => request.destroy(new Error(`no answer within ${IMAGE_FETCH_SECONDS} s`)), IMAGE_FETCH_SECONDS * 1000);
    request.on('close', () => clearTimeout(deadline));
    request.on('timeout', () => request.destroy(new Error(`no answer within ${IMAGE_FETCH_SECONDS} s`)));
    request.on('error', (err: NodeJS.ErrnoException) => reject(failed(err.code === 'ENOTPUBLIC' ? `${err.message}, which this server does not fetch from` : err.message)));
  });
}

/** Every image block of the request (in messages and in tool results), with where it is. */
function imageBlocks(request: CountTokensRequest): Array<{ block: ImageBlockParam; where: string }> {
  const found: Array<{ block: ImageBlockParam; where: string }> = [];
  const scan = (blocks: unknown, where: string): void => {
    if (!Array.isArray(blocks)) return;
    (blocks as ContentBlockParam[]).forEach((block, i) => {
      if (block.type === 'image') found.push({ block, where: `${where}.${i}` });
      else if (block.type === 'tool_result') scan(block.content, `${where}.${i}.content`);
    });
  };
  request.messages.forEach((message, m) => scan(message.content, `messages.${m}.content`));
  return found;
}

/**
 * Replaces the request's URL image sources with the fetched bytes (base64 sources, whose media type and
 * bytes are then checked like any other's); with `fetch` off, leaves them for the converter to refuse.
 */
export async function fetchImageUrls(request: CountTokensRequest, options: ImageOptions): Promise<void> {
  if (!options.fetchUrls) return;
  const urls = imageBlocks(request).filter(({ block }) => block.source.type === 'url');
  await Promise.all(urls.map(async ({ block, where }) => {
    if (block.source.type !== 'url') return;
    const image = await fetchImage(block.source.url, where, options.maxBytes);
    // The request names no media type for a URL: the bytes' own, else what the server declared (then refused).
    block.source = { type: 'base64', media_type: sniffMediaType(image.bytes) ?? image.mediaType, data: image.bytes.toString('base64') };
  }));
}
