// Limits and safety against the real server: Host allow-list, no CORS by default, the rate limit,
// the body limit, and the refusal to expose the default key.
import t from 'tap';
import { connect } from 'node:net';
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import { startTestServer, TEST_KEY } from './helpers/server.js';
import { tinyModelPath } from './helpers/models.js';
import { postMessage, readBody, readJson, send } from './helpers/http.js';
import { loadConfig } from '../src/config.js';
import { ConfigError } from '../src/config.js';
import { assertSafeExposure } from '../src/server/exposure.js';
import { hostAllowList, hostName } from '../src/server/host-check.js';
import { registerAuth } from '../src/api/auth.js';
import { registerErrorHandling } from '../src/api/errors.js';
import { registerRateLimit } from '../src/server/rate-limit.js';

const RATE_LIMITED_KEY = 'second-key';
const BEARER_KEY = 'third-key';
const server = await startTestServer(await tinyModelPath(), { slots: 1 }, 5, {
  server: { api_keys: [TEST_KEY, RATE_LIMITED_KEY, BEARER_KEY], rate_limit_per_minute: 3, allowed_hosts: ['pensieve.lan'], body_limit_mb: 1 },
});
t.teardown(() => server.close());
const hello = { model: 'claude-test', max_tokens: 1, messages: [{ role: 'user', content: 'Hi' }] };

t.test('Host allow-list', async (t) => {
  const port = new URL(server.url).port;
  for (const host of ['evil.example', `evil.example:${port}`, `localhost.evil.example:${port}`]) {
    const response = await send(`${server.url}/health`, { headers: { host } });
    t.equal(response.statusCode, 403, host);
    t.match(await readJson(response), { type: 'error', error: { type: 'permission_error', message: /not allowed/ } });
  }
  const refused = await postMessage(server.url, hello, { host: 'evil.example' });
  t.equal(refused.statusCode, 403, 'API routes too');
  await readBody(refused);
  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, 'app.localhost', '192.168.1.20', `pensieve.lan:${port}`, 'PENSIEVE.LAN.']) {
    const response = await send(`${server.url}/health`, { headers: { host } });
    t.equal(response.statusCode, 200, host);
    await readBody(response);
  }
});

t.test('a Host header that is not host[:port] is a 400, not read as the address inside it', async (t) => {
  for (const host of ['[127.0.0.1]evil.com', '[::1]evil.com', '127.0.0.1@evil.com', 'evil.com/x']) {
    const response = await send(`${server.url}/health`, { headers: { host } });
    t.equal(response.statusCode, 400, JSON.stringify(host));
    t.match(await readJson(response), { type: 'error', error: { type: 'invalid_request_error', message: /^the Host header is not a host name or address/ } });
  }
});

t.test('host names and allow-list entries', async (t) => {
  t.equal(hostName('[::1]:7777'), '::1');
  t.equal(hostName('Example.COM.:80'), 'example.com');
  t.equal(hostName('127.0.0.1:7777'), '127.0.0.1');
  for (const bad of ['[127.0.0.1]evil.com', '[127.0.0.1]', '[::1]:80:80', 'a b', 'evil.com:80x', '']) t.equal(hostName(bad), undefined, bad);
  const allowed = hostAllowList('0.0.0.0', ['.corp.example', 'box']);
  t.ok(allowed('corp.example') && allowed('a.corp.example') && allowed('box'));
  t.notOk(allowed('xcorp.example') || allowed('boxes') || allowed('evil.example'));
  t.ok(hostAllowList('127.0.0.1', ['*'])('evil.example'), '* turns the check off');
});

t.test('no CORS headers by default', async (t) => {
  const preflight = await send(`${server.url}/v1/messages`, {
    method: 'OPTIONS',
    headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-api-key,content-type' },
  });
  await readBody(preflight);
  t.notOk(Object.keys(preflight.headers).some((h) => h.startsWith('access-control-')), 'preflight');
  const response = await postMessage(server.url, hello, { origin: 'https://evil.example' });
  await readBody(response);
  t.equal(response.statusCode, 200);
  t.notOk(Object.keys(response.headers).some((h) => h.startsWith('access-control-')), 'request');
});

t.test('server.cors_origins answers those origins only', async (t) => {
  const other = await startTestServer(await tinyModelPath(), { slots: 1 }, 5, { server: { cors_origins: ['https://app.example'] } });
  t.teardown(() => other.close());
  const preflight = (origin: string) =>
    send(`${other.url}/v1/messages`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' } });
  const allowed = await preflight('https://app.example');
  await readBody(allowed);
  t.equal(allowed.headers['access-control-allow-origin'], 'https://app.example');
  const refused = await preflight('https://evil.example');
  await readBody(refused);
  t.equal(refused.headers['access-control-allow-origin'], undefined);
});

t.test('the rate limit answers 429 rate_limit_error with retry-after, per key', async (t) => {
  for (let i = 0; i < 3; i++) {
    const response = await postMessage(server.url, hello, { 'x-api-key': RATE_LIMITED_KEY });
    t.equal(response.statusCode, 200);
    await readBody(response);
  }
  const limited = await postMessage(server.url, hello, { 'x-api-key': RATE_LIMITED_KEY });
  t.equal(limited.statusCode, 429);
  t.match(limited.headers['retry-after'], /^\d+$/);
  t.match(limited.headers['request-id'], /^req_/);
  t.match(await readJson(limited), { type: 'error', error: { type: 'rate_limit_error', message: /rate limit exceeded/ }, request_id: limited.headers['request-id'] });
  const otherKey = await postMessage(server.url, hello);
  t.equal(otherKey.statusCode, 200, 'another key has its own budget');
  await readBody(otherKey);
  const health = await send(`${server.url}/health`);
  t.equal(health.statusCode, 200, '/health is not limited');
  await readBody(health);
});

t.test('made-up keys do not buy fresh rate-limit budgets: the bucket is the validated key', async (t) => {
  const statuses = async (headers: () => Record<string, string>): Promise<number[]> => {
    const out: number[] = [];
    for (let i = 0; i < 5; i++) {
      const response = await postMessage(server.url, hello, headers());
      out.push(response.statusCode!);
      await readBody(response);
    }
    return out;
  };
  // A valid Bearer token decides over x-api-key, so each request's random x-api-key changes nothing.
  t.same(await statuses(() => ({ authorization: `Bearer ${BEARER_KEY}`, 'x-api-key': randomUUID() })), [200, 200, 200, 429, 429]);
});

t.test('without a key on loopback, made-up keys share the address bucket', async (t) => {
  const app = Fastify();
  t.teardown(() => app.close());
  registerErrorHandling(app);
  registerAuth(app, { apiKeys: [TEST_KEY], requireKeyOnLoopback: false });
  await registerRateLimit(app, 3);
  app.get('/v1/models', async () => ({ data: [] }));
  const get = (headers: Record<string, string> = {}) => app.inject({ method: 'GET', url: '/v1/models', remoteAddress: '127.0.0.1', headers });
  const statuses = [];
  const keys: Record<string, string>[] = [{}, {}, {}, {}, { 'x-api-key': 'junk1' }, { 'x-api-key': 'junk2' }, { authorization: 'Bearer junk3' }];
  for (const headers of keys) statuses.push((await get(headers)).statusCode);
  t.same(statuses, [200, 200, 200, 429, 429, 429, 429]);
  t.equal((await get({ 'x-api-key': TEST_KEY })).statusCode, 200, 'a valid key has its own bucket');
});

t.test("errors of Node's HTTP parser have the API's shape", async (t) => {
  const { port } = new URL(server.url);
  const raw = (request: string): Promise<string> =>
    new Promise((resolve, reject) => {
      let answer = '';
      const socket = connect(Number(port), '127.0.0.1', () => socket.end(request));
      socket.on('data', (chunk) => (answer += String(chunk))).on('end', () => resolve(answer)).on('error', reject);
    });
  const bodyOf = (answer: string) => JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as unknown;
  const tooLarge = await raw(`GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`);
  t.match(tooLarge, /^HTTP\/1\.1 431 /);
  t.same(bodyOf(tooLarge), { type: 'error', error: { type: 'invalid_request_error', message: 'request headers are too large' } });
  const malformed = await raw('GARBAGE\r\n\r\n');
  t.match(malformed, /^HTTP\/1\.1 400 /);
  t.same(bodyOf(malformed), { type: 'error', error: { type: 'invalid_request_error', message: 'malformed HTTP request' } });
});

t.test('a body over the limit is a 413 request_too_large', async (t) => {
  const big = { ...hello, messages: [{ role: 'user', content: 'x'.repeat(1024 * 1024 + 1) }] };
  const response = await postMessage(server.url, big);
  t.equal(response.statusCode, 413);
  t.match(await readJson(response), { type: 'error', error: { type: 'request_too_large', message: 'request body is too large' } });
});

t.test('the default key (or none) is refused on a non-loopback address', async (t) => {
  const config = (server: Record<string, unknown>) => loadConfig({ env: {}, overrides: { server } }).config;
  t.throws(() => assertSafeExposure(config({ host: '0.0.0.0' })), new ConfigError("refusing to listen on 0.0.0.0 with the default API key 'pensieve-local-key': set server.api_keys (or PENSIEVE_SERVER_API_KEYS) to a secret key, or listen on 127.0.0.1"));
  t.throws(() => assertSafeExposure(config({ host: '192.168.1.2', api_keys: [] })), /with no API key/);
  t.doesNotThrow(() => assertSafeExposure(config({ host: '0.0.0.0', api_keys: ['a-long-secret'] })));
  t.doesNotThrow(() => assertSafeExposure(config({ host: 'localhost' })));
  t.doesNotThrow(() => assertSafeExposure(config({ host: '::1', api_keys: [] })));
});
