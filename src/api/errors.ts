// Errors in the Anthropic shape: {type: "error", error: {type, message}, request_id}. Every error the
// server answers goes through here, so clients (the SDK, Claude Code) always get a body they parse,
// and pick retry or not from the status: they retry 429, 5xx and 529, never other 4xx.
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';

export type ApiErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'request_too_large'
  | 'rate_limit_error'
  | 'api_error'
  | 'overloaded_error';

export interface ErrorBody {
  type: 'error';
  error: { type: ApiErrorType; message: string };
  request_id?: string;
}

/** Throw from a route or hook to answer with this status, type and message (and headers, e.g. retry-after). */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly type: ApiErrorType,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The API's answer to a prompt over the context; Claude Code reads the numbers and compacts. */
export const promptTooLong = (tokens: number, maximum: number): ApiError =>
  new ApiError(400, 'invalid_request_error', `prompt is too long: ${tokens} tokens > ${maximum} maximum`);

export function errorBody(type: ApiErrorType, message: string, requestId?: string): ErrorBody {
  return { type: 'error', error: { type, message }, ...(requestId !== undefined && { request_id: requestId }) };
}

/** The API's error type for a status; the status table of the API docs. */
export function errorTypeOf(status: number): ApiErrorType {
  switch (status) {
    case 401:
      return 'authentication_error';
    case 403:
      return 'permission_error';
    case 404:
      return 'not_found_error';
    case 413:
      return 'request_too_large';
    case 429:
      return 'rate_limit_error';
    case 529:
      return 'overloaded_error';
    default:
      return status >= 500 ? 'api_error' : 'invalid_request_error';
  }
}

type ValidationError = NonNullable<FastifyError['validation']>[number];

const quote = (v: unknown) => (typeof v === 'string' ? `'${v}'` : JSON.stringify(v));
const article = (word: string) => (/^[aeiou]/.test(word) ? `an ${word}` : `a ${word}`);

/**
 * One ajv error as `dotted.path: what is wrong`, the style of the real API
 * (`messages.0.content.1.tool_use_id: Field required`). `context` names the root ('body', 'querystring').
 */
export function describeValidationError(e: ValidationError, context = 'body'): string {
  const path = e.instancePath
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const params = e.params as Record<string, unknown>;
  let problem: string;
  switch (e.keyword) {
    case 'required':
      path.push(String(params.missingProperty));
      problem = 'Field required';
      break;
    case 'type': {
      if (path.length === 0 && context === 'body') return 'request body must be a JSON object';
      const types = String(params.type).split(',');
      problem = `must be ${types.map((t) => (t === 'null' ? 'null' : article(t))).join(' or ')}`;
      break;
    }
    case 'enum':
      problem = `must be one of ${(params.allowedValues as unknown[]).map(quote).join(', ')}`;
      break;
    case 'const':
      problem = `must be ${quote(params.allowedValue)}`;
      break;
    case 'minItems':
      problem = params.limit === 1 ? 'must not be empty' : `must have at least ${String(params.limit)} items`;
      break;
    case 'minLength':
      problem = params.limit === 1 ? 'must not be empty' : `must be at least ${String(params.limit)} characters long`;
      break;
    default:
      problem = e.message ?? `failed ${e.keyword}`;
  }
  // Body fields go unprefixed, as the API names them; other parts get their name in front.
  const where = context === 'body' ? path : [context, ...path];
  return `${where.length > 0 ? where.join('.') : context}: ${problem}`;
}

const mediaTypeOf = (request: FastifyRequest): string => {
  const type = request.headers['content-type'];
  return type ? `, not ${JSON.stringify(type.split(';')[0]!.trim())}` : '';
};

/** Status, type and message for anything thrown; unknown errors become a 500 that leaks nothing. */
function classify(error: unknown, request: FastifyRequest): { status: number; type: ApiErrorType; message: string; headers?: Record<string, string> } {
  if (error instanceof ApiError) return { status: error.status, type: error.type, message: error.message, headers: error.headers };
  const e = (error ?? {}) as Partial<FastifyError>;
  if (e.validation && e.validation.length > 0) {
    const message = describeValidationError(e.validation[0]!, e.validationContext);
    return { status: 400, type: 'invalid_request_error', message };
  }
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, type: 'request_too_large', message: 'request body is too large' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      // 400 rather than 415: the API's status table has no 415, and SDKs map 400 to BadRequestError.
      return { status: 400, type: 'invalid_request_error', message: `content-type must be application/json${mediaTypeOf(request)}` };
  }
  const status = typeof e.statusCode === 'number' ? e.statusCode : 500;
  // Fastify's own 4xx errors have safe messages; anything else may carry internals.
  if (status >= 400 && status < 500 && typeof e.message === 'string')
    return { status, type: errorTypeOf(status), message: e.message };
  return { status: status >= 500 && status < 600 ? status : 500, type: 'api_error', message: 'internal server error' };
}

/**
 * Sets the error and not-found handlers on `app` (call before registering routes, on the root
 * instance, so every route gets them). Errors become the API's shape; unexpected ones are logged with their stack.
 */
export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    if (reply.sent || reply.raw.headersSent) {
      // A stream already began (its own code sends `event: error`): nothing can be answered, so log
      // and end the response rather than leave the client waiting.
      request.log.error({ err: error }, 'error after the response began');
      if (!reply.raw.writableEnded) reply.raw.end();
      return;
    }
    const { status, type, message, headers } = classify(error, request);
    // Unexpected errors get their stack; the server's own answers (529 when overloaded, 503 while
    // stopping) are expected under load and get one line.
    if (status >= 500 && !(error instanceof ApiError)) request.log.error({ err: error }, 'request failed');
    else request.log[status >= 500 ? 'warn' : 'info']({ status, type, message }, 'request rejected');
    if (headers) reply.headers(headers);
    return reply.code(status).send(errorBody(type, message, request.id));
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0];
    return reply.code(404).send(errorBody('not_found_error', `${request.method} ${path}: no such endpoint`, request.id));
  });
}

/** A raw HTTP response with an error body, for connections that have no request object (yet). */
function writeRawError(socket: Socket, status: number, message: string): void {
  const body = JSON.stringify(errorBody(errorTypeOf(status), message));
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/**
 * Fastify options for the errors that arise before a route's handlers run: requests that Node's HTTP parser
 * refuses (a malformed request line, headers over 16 KB) and URLs that the router refuses (a path parameter
 * too long, a bad encoding). Fastify would answer those in its own shape.
 */
export const frameworkErrorOptions: Pick<FastifyServerOptions, 'clientErrorHandler' | 'frameworkErrors'> = {
  clientErrorHandler(error: Error & { code?: string }, socket: Socket) {
    if (error.code === 'ECONNRESET' || socket.destroyed) return; // nothing to answer
    if (socket.writable) {
      if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') writeRawError(socket, 408, 'the request took too long to arrive');
      else if (error.code === 'HPE_HEADER_OVERFLOW') writeRawError(socket, 431, 'request headers are too large');
      else writeRawError(socket, 400, 'malformed HTTP request');
    }
    socket.destroy();
  },
  frameworkErrors(error, request, reply) {
    const [status, message] =
      error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? [414, 'request URL is too long: a path segment is over its maximum length']
      : error.code === 'FST_ERR_BAD_URL' ? [400, 'request URL is not valid: a path segment is not valid percent-encoding']
      : [500, 'internal server error'];
    // Fastify types this reply by the route's schema generics; no route matched, so it is a plain reply.
    void (reply as FastifyReply).code(status).header('request-id', request.id).send(errorBody(errorTypeOf(status), message, request.id));
  },
};
