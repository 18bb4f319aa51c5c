// Request bodies: the server's one parser, for JSON. It decodes a compressed body (Claude Code gzips its
// bodies with CLAUDE_CODE_GZIP_REQUEST_BODIES) within the body limit, parses it, and refuses what later
// stages cannot take: nesting deeper than MAX_DEPTH (the copy to the preparation pool and llama.cpp's JSON
// code recurse, and a 10,000-deep array overflows their stacks), keys that would poison prototypes, and
// unpaired surrogates (mended: llama.cpp's JSON parser refuses them).
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from '../api/errors.js';

/** Deepest nesting of arrays and objects a body may have (Claude Code's requests: 10). */
export const MAX_DEPTH = 64;

type Decoder = (data: Buffer, options: { maxOutputLength: number }) => Promise<Buffer>;

/** Content-Encoding values and their decoders (`deflate` is zlib-wrapped, as HTTP defines it). */
const DECODERS: Record<string, Decoder> = {
  gzip: promisify(zlib.gunzip),
  'x-gzip': promisify(zlib.gunzip),
  deflate: promisify(zlib.inflate),
  br: promisify(zlib.brotliDecompress),
};

const invalid = (message: string): ApiError => new ApiError(400, 'invalid_request_error', message);

/** The body as sent, decoded by its Content-Encoding; at most `limit` bytes decoded, so a compression bomb is refused. */
async function decode(request: FastifyRequest, body: Buffer, limit: number): Promise<Buffer> {
  const encoding = (request.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding === 'identity') return body;
  const decoder = DECODERS[encoding];
  if (!decoder) throw new ApiError(415, 'invalid_request_error', `content-encoding ${JSON.stringify(encoding)} is not supported: send gzip, deflate, br or none`);
  try {
    return await decoder(body, { maxOutputLength: limit });
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw new ApiError(413, 'request_too_large', 'request body is too large once decoded');
    throw invalid(`request body is not valid ${encoding} data: ${(err as Error).message}`);
  }
}

interface Frame {
  value: object;
  depth: number;
  key?: string | number;
  parent?: Frame;
}

/** The dotted path of `frame` (of its `key` when given), as the API names fields: tools.0.input_schema. */
const pathOf = (frame: Frame, key?: string): string => {
  const keys: Array<string | number> = key === undefined ? [] : [key];
  for (let f: Frame | undefined = frame; f?.key !== undefined; f = f.parent) keys.push(f.key);
  return keys.reverse().join('.');
};

/**
 * Vets a parsed body: throws a 400 when it nests deeper than MAX_DEPTH or has a `__proto__` key or a
 * `constructor` holding `prototype` (what Fastify's own parser refuses). String values with an unpaired
 * surrogate (JSON's \\u escapes can make one; a client that cuts text between the halves of an emoji does)
 * get U+FFFD in its place, as any conversion to UTF-8 gives. Iterative, so any depth is walked safely.
 */
function vet(value: unknown): void {
  if (typeof value !== 'object' || value === null) return;
  const stack: Frame[] = [{ value, depth: 1 }];
  for (let frame = stack.pop(); frame; frame = stack.pop()) {
    if (frame.depth > MAX_DEPTH) throw invalid(`${pathOf(frame)}: nested deeper than ${MAX_DEPTH} levels`);
    const container = frame.value as Record<string | number, unknown>;
    const visit = (child: unknown, key: string | number): void => {
      if (typeof child === 'string') {
        if (!child.isWellFormed()) container[key] = child.toWellFormed();
      } else if (typeof child === 'object' && child !== null) {
        stack.push({ value: child, depth: frame.depth + 1, key, parent: frame });
      }
    };
    if (Array.isArray(container)) {
      container.forEach(visit);
      continue;
    }
    for (const [key, child] of Object.entries(container)) {
      if (key === '__proto__' || (key === 'constructor' && typeof child === 'object' && child !== null && Object.hasOwn(child, 'prototype')))
        throw invalid(`${pathOf(frame, key)}: a key named ${key === '__proto__' ? '__proto__' : 'constructor with a prototype'} is refused`);
      visit(child, key);
    }
  }
}

/**
 * Makes `app` parse JSON bodies as above (and no plain-text ones, so a text body is a content-type
 * error rather than a string that fails validation). A request that matches no route is answered 404
 * without its body being parsed.
 */
export function registerBodyParsing(app: FastifyInstance, limit: number): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, async (request: FastifyRequest, raw: Buffer) => {
    if (request.is404) return undefined;
    const text = (await decode(request, raw, limit)).toString('utf8');
    if (text.trim() === '') throw invalid('request body is empty');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw invalid(`request body is not valid JSON: ${(err as Error).message}`);
    }
    vet(body);
    return body;
  });
}
