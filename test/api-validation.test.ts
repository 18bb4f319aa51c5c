import t, { type Test } from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import Fastify, { type InjectOptions } from 'fastify';
import { registerAuth } from '../src/api/auth.js';
import { ApiError, errorBody, frameworkErrorOptions, registerErrorHandling } from '../src/api/errors.js';
import { MAX_DEPTH, registerBodyParsing } from '../src/server/body.js';
import { registerModelRoutes, resolveModelName } from '../src/api/models.js';
import { countTokensRequestSchema, fastifyAjvOptions, messagesRequestSchema } from '../src/api/schemas.js';

const KEY = 'KEY'; // the fixture's Authorization header is `Bearer KEY`
/** ../shared beside the repository, wherever it is cloned. */
const FIXTURE = fileURLToPath(new URL('../../shared/fixtures/claude-code-first-request.json', import.meta.url));
const MODEL = { id: 'qwen-test', displayName: 'Qwen Test', createdAt: '2025-01-01T00:00:00Z' };
const ALIASES = { 'claude-*': 'default', sonnet: 'default', 'gpt-4': 'other-model' };

interface BuildOptions {
  bodyLimit?: number;
  apiKeys?: string[];
  requireKeyOnLoopback?: boolean;
  /** Fastify's own ajv options (type coercion on) instead of fastifyAjvOptions. */
  ajvDefaults?: boolean;
}

async function build(t: Test, opts: BuildOptions = {}) {
  const bodyLimit = opts.bodyLimit ?? 1024 * 1024;
  const app = Fastify({ ...frameworkErrorOptions, bodyLimit, ajv: opts.ajvDefaults ? {} : fastifyAjvOptions });
  const seen: { body?: unknown } = {};
  registerBodyParsing(app, bodyLimit);
  registerErrorHandling(app);
  registerAuth(app, { apiKeys: opts.apiKeys ?? [KEY, 'second-key'], requireKeyOnLoopback: opts.requireKeyOnLoopback ?? true });
  registerModelRoutes(app, () => MODEL, ALIASES);
  const echo = async (request: { body: unknown }) => {
    seen.body = request.body;
    return { ok: true };
  };
  app.post('/v1/messages', { schema: { body: messagesRequestSchema } }, echo);
  app.post('/v1/messages/count_tokens', { schema: { body: countTokensRequestSchema } }, echo);
  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/v1/boom', async () => {
    throw new Error('secret internals');
  });
  app.get('/v1/late', async (_request, reply) => {
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream' });
    reply.raw.write('event: ping\ndata: {"type":"ping"}\n\n');
    throw new Error('failed mid-stream');
  });
  app.get('/v1/busy', async () => {
    throw new ApiError(529, 'overloaded_error', 'too many requests waiting', { 'retry-after': '3' });
  });
  t.teardown(() => app.close());
  // Fastify's own options log ajv's strict-mode notes about union types (see schemas.ts): keep them out of the output.
  const warn = console.warn;
  if (opts.ajvDefaults) console.warn = () => {};
  try {
    await app.ready();
  } finally {
    console.warn = warn;
  }
  return { app, seen };
}

const auth = { 'x-api-key': KEY };
const minimal = () => ({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] });

function isErrorBody(t: Test, res: { json(): unknown }, status: number, type: string, message?: RegExp) {
  const body = res.json() as { type: string; error: { type: string; message: string }; request_id?: string };
  t.match(body, { type: 'error', error: { type, message: String } }, `${status} ${type}`);
  t.equal(Object.keys(body.error).length, 2, 'error has only type and message');
  t.type(body.request_id, 'string', 'request_id');
  if (message) t.match(body.error.message, message);
  return body.error.message;
}

async function expectError(
  t: Test,
  app: Awaited<ReturnType<typeof build>>['app'],
  request: InjectOptions,
  status: number,
  type: string,
  message?: RegExp,
) {
  const res = await app.inject({ method: 'POST', url: '/v1/messages', ...request, headers: { ...auth, ...request.headers } });
  t.equal(res.statusCode, status, `status ${status}`);
  return isErrorBody(t, res, status, type, message);
}

t.test('the Claude Code fixture is accepted as is', { skip: !existsSync(FIXTURE) && 'no fixture' }, async (t) => {
  const fixture = JSON.parse(readFileSync(FIXTURE, 'utf8')) as {
    method: 'POST';
    url: string;
    headers: Record<string, string>;
    body: Record<string, unknown>;
  };
  const { 'content-length': _length, connection: _connection, ...headers } = fixture.headers;
  for (const ajvDefaults of [false, true])
    await t.test(ajvDefaults ? "with Fastify's ajv options" : 'with fastifyAjvOptions', async (t) => {
      const { app, seen } = await build(t, { ajvDefaults });
      const res = await app.inject({ method: fixture.method, url: fixture.url, headers, payload: JSON.stringify(fixture.body) });
      t.equal(res.statusCode, 200, res.body);
      t.same(res.json(), { ok: true });
      t.strictSame(seen.body, fixture.body, 'validation changed nothing in the body');

      const { max_tokens: _m, stream: _s, metadata: _d, ...countBody } = fixture.body;
      const count = await app.inject({ method: 'POST', url: '/v1/messages/count_tokens?beta=true', headers, payload: countBody });
      t.equal(count.statusCode, 200, count.body);
    });
});

t.test("with fastifyAjvOptions, the schemas compile without ajv's strict-mode warnings", async (t) => {
  const warnings: unknown[] = [];
  for (const method of ['warn', 'log', 'error'] as const) {
    const original = console[method];
    console[method] = (...args: unknown[]) => void warnings.push(args);
    t.teardown(() => void (console[method] = original));
  }
  await build(t);
  t.strictSame(warnings, []);
});

t.test('valid requests pass', async (t) => {
  const { app } = await build(t);
  const ok = async (body: object, url = '/v1/messages') => {
    const res = await app.inject({ method: 'POST', url, headers: auth, payload: body });
    t.equal(res.statusCode, 200, res.body);
  };
  await ok(minimal());
  await ok({ model: 'x', messages: [{ role: 'user', content: 'Hi' }] }, '/v1/messages/count_tokens');
  await ok({
    ...minimal(),
    system: [{ type: 'text', text: 'sys', cache_control: { type: 'ephemeral', ttl: '1h' } }],
    stream: false,
    temperature: 0.5,
    top_p: 1,
    top_k: 0,
    stop_sequences: ['END'],
    metadata: { user_id: null },
    tool_choice: { type: 'tool', name: 'get', disable_parallel_tool_use: true },
    thinking: { type: 'enabled', budget_tokens: 2048 },
    service_tier: 'auto',
    some_future_field: { anything: true },
    tools: [
      { name: 'get', description: 'd', input_schema: { $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'object', properties: { a: { type: 'nonsense' } } } },
      { type: 'custom', name: 'put', input_schema: { type: 'object' }, defer_loading: true, strict: true },
      { type: 'bash_20250124', name: 'bash' },
      { type: 'web_search_20250305', name: 'web_search', max_uses: 3 },
    ],
    messages: [
      { role: 'user', content: [{ type: 'text', text: 'look', citations: null }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AAAA' } }] },
      { role: 'assistant', content: [{ type: 'thinking', thinking: 'hmm', signature: 's' }, { type: 'redacted_thinking', data: 'x' }, { type: 'tool_use', id: 'toolu_1', name: 'get', input: {}, caller: { type: 'direct' } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'text', text: 'r' }, { type: 'image', source: { type: 'url', url: 'https://x/y.png' } }], is_error: false }, { type: 'tool_result', tool_use_id: 'toolu_1' }, { type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'doc' } }] },
      { role: 'system', content: 'be brief' },
      { role: 'assistant', content: [] },
    ],
  });
  await ok({ ...minimal(), thinking: { type: 'adaptive', display: 'omitted' }, context_management: { edits: [] }, output_config: { effort: 'medium' } });
  await ok({ ...minimal(), max_tokens: 10_000_000 });
});

t.test('bad requests name the field', async (t) => {
  const { app } = await build(t);
  const bad = (body: unknown, message: RegExp, url = '/v1/messages') =>
    t.test(String(message), (t) =>
      expectError(t, app, { url, payload: JSON.stringify(body), headers: { 'content-type': 'application/json' } }, 400, 'invalid_request_error', message));
  const m = minimal();
  const withContent = (content: unknown, role = 'user') => ({ ...m, messages: [{ role, content }] });

  await t.test('malformed JSON', (t) =>
    expectError(t, app, { payload: '{"model": ', headers: { 'content-type': 'application/json' } }, 400, 'invalid_request_error', /not valid JSON/));
  await t.test('empty body', (t) =>
    expectError(t, app, { payload: '', headers: { 'content-type': 'application/json' } }, 400, 'invalid_request_error', /empty/));
  await t.test('not JSON', (t) =>
    expectError(t, app, { payload: 'hello', headers: { 'content-type': 'text/xml' } }, 400, 'invalid_request_error', /content-type/));
  await bad([1, 2], /^request body must be a JSON object$/);
  await bad('text', /^request body must be a JSON object$/);
  await bad({ ...m, model: undefined }, /^model: Field required$/);
  await bad({ ...m, model: '' }, /^model: must not be empty$/);
  await bad({ ...m, max_tokens: undefined }, /^max_tokens: Field required$/);
  await bad({ ...m, max_tokens: 0 }, /^max_tokens: must be >= 1$/);
  await bad({ ...m, max_tokens: 1.5 }, /^max_tokens: must be an integer$/);
  await bad({ ...m, messages: [] }, /^messages: must not be empty$/);
  await bad({ ...m, messages: [{ role: 'bot', content: 'x' }] }, /^messages\.0\.role: must be one of 'user', 'assistant', 'system'$/);
  await bad({ ...m, messages: [{ role: 'user' }] }, /^messages\.0\.content: Field required$/);
  await bad(withContent(5), /^messages\.0\.content: must be a string or an array$/);
  await bad(withContent([{ type: 'text', text: 'a' }, { type: 'video', url: 'x' }]), /^messages\.0\.content\.1\.type: must be one of 'text', 'image', .*'tool_result'/);
  await bad(withContent([{ text: 'a' }]), /^messages\.0\.content\.0\.type: Field required$/);
  await bad(withContent(['a']), /^messages\.0\.content\.0: must be an object$/);
  await bad(withContent([{ type: 'text', text: 'a' }, { type: 'tool_result', content: 'x' }]), /^messages\.0\.content\.1\.tool_use_id: Field required$/);
  await bad(withContent([{ type: 'tool_use', id: 't', name: 'n', input: 'x' }], 'assistant'), /^messages\.0\.content\.0\.input: must be an object$/);
  await bad(withContent([{ type: 'tool_use', id: 't', name: 'n', input: [] }], 'assistant'), /^messages\.0\.content\.0\.input: must be an object$/);
  await bad(withContent([{ type: 'tool_result', tool_use_id: 't', content: [{ type: 'thinking', thinking: 'x', signature: 'y' }] }]), /^messages\.0\.content\.0\.content\.0\.type: must be one of 'text', 'image'/);
  await bad(withContent([{ type: 'image', source: { type: 'base64', data: 'x' } }]), /^messages\.0\.content\.0\.source\.media_type: Field required$/);
  await bad(withContent([{ type: 'thinking', thinking: 'x' }], 'assistant'), /^messages\.0\.content\.0\.signature: Field required$/);
  await bad(withContent([{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'x' } }], 'system'), /^messages\.0\.content\.0\.type: must be one of 'text'$/);
  await bad({ ...m, system: [{ type: 'text' }] }, /^system\.0\.text: Field required$/);
  await bad({ ...m, temperature: 2 }, /^temperature: must be <= 1$/);
  await bad({ ...m, top_k: -1 }, /^top_k: must be >= 0$/);
  await bad({ ...m, stop_sequences: ['a', {}] }, /^stop_sequences\.1: must be a string$/);
  await bad({ ...m, tools: [{ name: 'x' }] }, /^tools\.0\.input_schema: Field required$/);
  await bad({ ...m, tools: [{ name: 'x', input_schema: { type: 'string' } }] }, /^tools\.0\.input_schema\.type: must be 'object'$/);
  await bad({ ...m, tool_choice: { type: 'tool' } }, /^tool_choice\.name: Field required$/);
  await bad({ ...m, tool_choice: { type: 'sometimes' } }, /^tool_choice\.type: must be one of 'auto', 'any', 'none', 'tool'$/);
  await bad({ ...m, thinking: { type: 'enabled' } }, /^thinking\.budget_tokens: Field required$/);
  await bad({ ...m, thinking: { type: 'enabled', budget_tokens: 10 } }, /^thinking\.budget_tokens: must be >= 1024$/);
  await bad({ ...m, thinking: { type: 'deep' } }, /^thinking\.type: must be one of 'enabled', 'disabled', 'adaptive'/);
  await bad({ model: 'x', messages: [] }, /^messages: must not be empty$/, '/v1/messages/count_tokens');
  await bad({ ...m, stream: 'yes' }, /^stream: must be a boolean$/);
  await bad({ ...m, stop_sequences: null }, /^stop_sequences: must be an array$/);
  await bad({ ...m, system: 5 }, /^system: must be a string or an array$/);
  await bad({ ...m, metadata: { user_id: 5 } }, /^metadata\.user_id: must be a string or null$/);
});

t.test("with Fastify's own ajv options (coercion on), blocks are still checked", async (t) => {
  const { app, seen } = await build(t, { ajvDefaults: true });
  const one = { ...minimal(), messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }] }] };
  const res = await app.inject({ method: 'POST', url: '/v1/messages', headers: auth, payload: one });
  t.equal(res.statusCode, 200, res.body);
  t.strictSame(seen.body, one, 'a one-element content array stays an array');
  const withContent = (content: unknown) => ({ ...minimal(), messages: [{ role: 'user', content }] });
  await expectError(t, app, { payload: withContent([{ type: 'tool_result' }]) }, 400, 'invalid_request_error', /^messages\.0\.content\.0\.tool_use_id: Field required$/);
  await expectError(t, app, { payload: withContent([{ type: 'video' }]) }, 400, 'invalid_request_error', /^messages\.0\.content\.0\.type: must be one of 'text'/);
  await expectError(t, app, { payload: { ...minimal(), max_tokens: 0 } }, 400, 'invalid_request_error', /^max_tokens: must be >= 1$/);
});

t.test('a body over the limit is 413 request_too_large', async (t) => {
  const { app } = await build(t, { bodyLimit: 1000 });
  const payload = { ...minimal(), messages: [{ role: 'user', content: 'x'.repeat(2000) }] };
  await expectError(t, app, { payload }, 413, 'request_too_large', /too large/);
});

t.test('request bodies: nesting, prototype keys, content types and encodings', async (t) => {
  const { app, seen } = await build(t);
  const post = (payload: string | Buffer, headers: Record<string, string> = {}, method: InjectOptions['method'] = 'POST') =>
    app.inject({ method, url: '/v1/messages', payload, headers: { ...auth, 'content-type': 'application/json', ...headers } });
  const text = JSON.stringify(minimal());
  const withField = (json: string) => `${text.slice(0, -1)},"foo":${json}}`;
  const nested = (n: number) => '['.repeat(n) + ']'.repeat(n);

  let res = await post(withField(nested(10_000)));
  t.equal(res.statusCode, 400, 'a 10,000-deep array');
  isErrorBody(t, res, 400, 'invalid_request_error', new RegExp(`^foo(\\.0){${MAX_DEPTH - 1}}: nested deeper than ${MAX_DEPTH} levels$`));
  res = await post(withField(nested(MAX_DEPTH - 1)));
  t.equal(res.statusCode, 200, `${MAX_DEPTH} levels in all pass`);
  res = await post(withField('{"a":'.repeat(5000) + '1' + '}'.repeat(5000)));
  t.equal(res.statusCode, 400, 'a deep object');
  isErrorBody(t, res, 400, 'invalid_request_error', /^foo(\.a)+: nested deeper than/);
  const input = JSON.parse(withField('0')) as Record<string, unknown>;
  input.messages = [{ role: 'assistant', content: [{ type: 'tool_use', id: 't', name: 'n', input: { x: JSON.parse(nested(100)) } }] }];
  res = await post(JSON.stringify(input));
  isErrorBody(t, res, 400, 'invalid_request_error', /^messages\.0\.content\.0\.input\.x(\.0)+: nested deeper than/);

  res = await post(withField('{"__proto__":{"polluted":1}}'));
  t.equal(res.statusCode, 400);
  isErrorBody(t, res, 400, 'invalid_request_error', /^foo\.__proto__: a key named __proto__ is refused$/);
  res = await post(withField('{"constructor":{"prototype":{}}}'));
  isErrorBody(t, res, 400, 'invalid_request_error', /^foo\.constructor: a key named constructor with a prototype is refused$/);
  res = await post('{"model": ');
  isErrorBody(t, res, 400, 'invalid_request_error', /^request body is not valid JSON: /);
  res = await post(withField('["a\\ud800", {"b": "\\udc00c"}, "\\ud83d\\ude00"]'));
  t.equal(res.statusCode, 200);
  t.strictSame((seen.body as { foo: unknown }).foo, ['a\ufffd', { b: '\ufffdc' }, '\u{1f600}'], 'unpaired surrogates become U+FFFD; pairs stay');

  res = await post(text, { 'content-type': 'text/plain' });
  t.equal(res.statusCode, 400);
  isErrorBody(t, res, 400, 'invalid_request_error', /^content-type must be application\/json, not "text\/plain"$/);
  res = await post('', {}, 'OPTIONS');
  t.equal(res.statusCode, 404, 'OPTIONS has no route: its (empty) body is not read');
  isErrorBody(t, res, 404, 'not_found_error', /^OPTIONS \/v1\/messages: no such endpoint$/);

  for (const [encoding, encoded] of [['gzip', gzipSync(text)], ['deflate', deflateSync(text)], ['br', brotliCompressSync(text)], ['GZip', gzipSync(text)]] as const) {
    res = await post(encoded, { 'content-encoding': encoding });
    t.equal(res.statusCode, 200, `content-encoding ${encoding}`);
    t.strictSame(seen.body, minimal());
  }
  res = await post(text, { 'content-encoding': 'gzip' });
  t.equal(res.statusCode, 400, 'plain JSON declared as gzip');
  isErrorBody(t, res, 400, 'invalid_request_error', /^request body is not valid gzip data: /);
  res = await post(text, { 'content-encoding': 'compress' });
  t.equal(res.statusCode, 415);
  isErrorBody(t, res, 415, 'invalid_request_error', /^content-encoding "compress" is not supported/);
  const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024, 32)); // 64 MB of spaces in 64 KB
  res = await post(bomb, { 'content-encoding': 'gzip' });
  t.equal(res.statusCode, 413, 'the body limit applies to the decoded size');
  isErrorBody(t, res, 413, 'request_too_large', /^request body is too large once decoded$/);
});

t.test("errors that arise before a route's handlers have the API's shape", async (t) => {
  const { app } = await build(t);
  let res = await app.inject({ method: 'GET', url: `/v1/models/${'a'.repeat(5000)}`, headers: auth });
  t.equal(res.statusCode, 414);
  isErrorBody(t, res, 414, 'invalid_request_error', /^request URL is too long/);
  res = await app.inject({ method: 'GET', url: '/v1/models/%zz', headers: auth });
  t.equal(res.statusCode, 400);
  isErrorBody(t, res, 400, 'invalid_request_error', /^request URL is not valid/);
});

t.test('unknown routes, thrown errors and ApiError', async (t) => {
  const { app } = await build(t);
  let res = await app.inject({ method: 'GET', url: '/v2/nothing?x=1', headers: auth });
  t.equal(res.statusCode, 404);
  isErrorBody(t, res, 404, 'not_found_error', /^GET \/v2\/nothing: /);
  res = await app.inject({ method: 'GET', url: '/v1/messages', headers: auth });
  t.equal(res.statusCode, 404);
  res = await app.inject({ method: 'GET', url: '/v1/boom', headers: auth });
  t.equal(res.statusCode, 500);
  t.notMatch(isErrorBody(t, res, 500, 'api_error'), /secret/);
  res = await app.inject({ method: 'GET', url: '/v1/late', headers: auth });
  t.equal(res.statusCode, 200, 'an error after the headers leaves the status alone');
  t.equal(res.body, 'event: ping\ndata: {"type":"ping"}\n\n', '...and ends the response');
  res = await app.inject({ method: 'GET', url: '/v1/busy', headers: auth });
  t.equal(res.statusCode, 529);
  t.equal(res.headers['retry-after'], '3');
  isErrorBody(t, res, 529, 'overloaded_error', /too many/);
  t.same(errorBody('api_error', 'm'), { type: 'error', error: { type: 'api_error', message: 'm' } });
});

t.test('auth', async (t) => {
  const { app } = await build(t);
  const remote = { remoteAddress: '192.0.2.7' };
  const get = (headers: Record<string, string>, extra: Partial<InjectOptions> = {}) =>
    app.inject({ method: 'GET', url: '/v1/models', headers, ...extra });
  let res = await get({});
  t.equal(res.statusCode, 401);
  isErrorBody(t, res, 401, 'authentication_error', /missing API key/);
  res = await get({ 'x-api-key': 'wrong' });
  t.equal(res.statusCode, 401);
  isErrorBody(t, res, 401, 'authentication_error', /invalid x-api-key/);
  res = await get({ authorization: 'Bearer wrong' });
  t.equal(res.statusCode, 401);
  isErrorBody(t, res, 401, 'authentication_error', /^invalid bearer token in Authorization$/);
  res = await get({ authorization: 'Basic S0VZ' });
  t.equal(res.statusCode, 401, 'only Bearer');
  t.equal((await get({ 'x-api-key': KEY })).statusCode, 200, 'x-api-key');
  t.equal((await get({ 'x-api-key': 'second-key' })).statusCode, 200, 'any configured key');
  t.equal((await get({ authorization: `Bearer ${KEY}` })).statusCode, 200, 'Bearer');
  t.equal((await get({ authorization: `bearer ${KEY}` })).statusCode, 200, 'scheme is case-insensitive');
  t.equal((await get({ 'x-api-key': 'stale', authorization: `Bearer ${KEY}` })).statusCode, 200, 'a Bearer token decides when sent');
  res = await get({ 'x-api-key': KEY, authorization: 'Bearer stale' });
  t.equal(res.statusCode, 401, '...even against a valid x-api-key');
  isErrorBody(t, res, 401, 'authentication_error', /^invalid bearer token in Authorization$/);
  t.equal((await get({ 'x-api-key': KEY, authorization: 'Basic S0VZ' })).statusCode, 200, 'another scheme leaves x-api-key to decide');
  t.equal((await get({ 'x-api-key': KEY }, remote)).statusCode, 200, 'remote with key');
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200, '/health is open');
  t.equal((await app.inject({ method: 'GET', url: '/%761/models' })).statusCode, 401, 'encoded path is still checked');
  t.equal((await app.inject({ method: 'GET', url: '/nowhere' })).statusCode, 401, 'unknown paths need a key');

  t.test('loopback exemption', async (t) => {
    const { app } = await build(t, { requireKeyOnLoopback: false });
    const get = (remoteAddress: string) => app.inject({ method: 'GET', url: '/v1/models', remoteAddress });
    for (const address of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1'])
      t.equal((await get(address)).statusCode, 200, address);
    for (const address of ['192.0.2.7', '::ffff:10.0.0.1', '128.0.0.1', 'fe80::1'])
      t.equal((await get(address)).statusCode, 401, address);
  });
  t.test('no keys configured', async (t) => {
    const { app } = await build(t, { apiKeys: [] });
    t.equal((await get({}, remote)).statusCode, 401, 'the first app still checks');
    t.equal((await app.inject({ method: 'GET', url: '/v1/models', ...remote })).statusCode, 200);
  });
});

t.test('models', async (t) => {
  const { app } = await build(t);
  const get = (url: string) => app.inject({ method: 'GET', url, headers: auth });
  let res = await get('/v1/models');
  t.equal(res.statusCode, 200);
  const model = (id: string) => ({ type: 'model', id, display_name: 'Qwen Test', created_at: '2025-01-01T00:00:00Z' });
  t.strictSame(res.json(), { data: [model('qwen-test'), model('sonnet')], has_more: false, first_id: 'qwen-test', last_id: 'sonnet' });
  for (const id of ['qwen-test', 'sonnet', 'claude-opus-5-5']) {
    res = await get(`/v1/models/${id}`);
    t.equal(res.statusCode, 200, id);
    t.strictSame(res.json(), model(id));
  }
  for (const id of ['gpt-4', 'llama']) {
    res = await get(`/v1/models/${id}`);
    t.equal(res.statusCode, 404, id);
    isErrorBody(t, res, 404, 'not_found_error', new RegExp(`^model: ${id}$`));
  }
});

t.test('resolveModelName', async (t) => {
  const aliases = { 'claude-*': 'default', 'claude-opus-*': 'other', 'claude-opus-4-*': 'm', exact: 'default', 'ex*': 'other' };
  t.equal(resolveModelName('m', aliases, 'm'), 'm', 'the loaded id');
  t.equal(resolveModelName('claude-sonnet-4-5', aliases, 'm'), 'm', 'prefix pattern');
  t.equal(resolveModelName('claude-opus-5', aliases, 'm'), undefined, 'longest prefix wins; its target is not loaded');
  t.equal(resolveModelName('claude-opus-4-8', aliases, 'm'), 'm', 'target equal to the loaded id');
  t.equal(resolveModelName('exact', aliases, 'm'), 'm', 'exact match before patterns');
  t.equal(resolveModelName('exa', aliases, 'm'), undefined);
  t.equal(resolveModelName('gpt-4', aliases, 'm'), 'm', 'no match falls back to the loaded model');
  t.equal(resolveModelName('gpt-4', aliases, 'm', 'none'), undefined, 'unless the fallback is off');
  t.equal(resolveModelName('anything', { '*': 'default' }, 'm', 'none'), 'm', "'*' matches all");
});
