// The Anthropic Messages API end to end, with the official SDK as the client, against the real server
// (HTTP, prep pool, engine thread, llama.cpp) on the generated tiny model.
import t from 'tap';
import Anthropic from '@anthropic-ai/sdk';
import { Ajv } from 'ajv';
import { readFileSync, existsSync } from 'node:fs';
import { startTestServer, TEST_KEY } from './helpers/server.js';
import { tinyModelPath } from './helpers/models.js';
import { slotsFreed } from './helpers/engine.js';

const server = await startTestServer(await tinyModelPath());
t.teardown(() => server.close());
const client = new Anthropic({ baseURL: server.url, apiKey: TEST_KEY, maxRetries: 0 });

const weatherTool = {
  name: 'get_weather',
  description: 'Get the weather for a city',
  // Enums and booleans only: a random-weight model, held to the grammar, must finish the JSON (the
  // grammar bounds the whitespace between tokens, so 1000 tokens always suffice).
  input_schema: {
    type: 'object' as const,
    properties: { unit: { enum: ['celsius', 'fahrenheit'] }, detailed: { type: 'boolean' } },
    required: ['unit', 'detailed'],
    additionalProperties: false,
  },
};
const question = [{ role: 'user' as const, content: 'What is the weather in Paris?' }];
// The SDK's types no longer list sampling settings, which the API (and Pensieve) still take.
const sampling = (temperature: number): object => ({ temperature });

t.test('create returns an Anthropic message', async (t) => {
  const message = await client.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 12, ...sampling(0), messages: question });
  t.match(message, { id: /^msg_/, type: 'message', role: 'assistant', model: 'claude-sonnet-4-5', stop_sequence: null });
  t.ok(['max_tokens', 'end_turn'].includes(message.stop_reason!));
  t.equal(message.content[0]?.type, 'text');
  t.ok(message.usage.input_tokens > 10);
  t.ok(message.usage.output_tokens > 0 && message.usage.output_tokens <= 12);
});

t.test('the stream helper ends with the same message as a plain create', async (t) => {
  const params = { model: 'claude-haiku', max_tokens: 16, ...sampling(0), messages: question };
  const plain = await client.messages.create(params);
  const stream = client.messages.stream(params);
  const events: string[] = [];
  stream.on('streamEvent', (event) => events.push(event.type));
  const streamed = await stream.finalMessage();
  const { parsed_output: _parsed, ...streamedMessage } = streamed as typeof streamed & { parsed_output?: unknown }; // added by the SDK's helper
  t.same({ ...streamedMessage, id: '' }, { ...plain, id: '' });
  t.equal(events[0], 'message_start');
  t.same(events.slice(-2), ['message_delta', 'message_stop']);
  t.ok(events.includes('content_block_start') && events.includes('content_block_stop'));
});

t.test('a forced tool call yields schema-valid input, and a tool result round trip works', async (t) => {
  const message = await client.messages.create({
    model: 'claude-opus-4-1', max_tokens: 1000, ...sampling(0.7), messages: question, tools: [weatherTool],
    tool_choice: { type: 'tool', name: 'get_weather', disable_parallel_tool_use: true },
  });
  t.equal(message.stop_reason, 'tool_use');
  const call = message.content.find((b) => b.type === 'tool_use');
  if (!call || call.type !== 'tool_use') return t.fail('no tool_use block');
  t.match(call, { id: /^toolu_/, name: 'get_weather' });
  const validate = new Ajv().compile(weatherTool.input_schema);
  t.ok(validate(call.input), `input ${JSON.stringify(call.input)} satisfies the schema`);

  const next = await client.messages.create({
    model: 'claude-opus-4-1', max_tokens: 8, ...sampling(0), tools: [weatherTool],
    messages: [...question, { role: 'assistant', content: message.content }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: 'Sunny, 21 degrees' }] }],
  });
  t.equal(next.type, 'message');
});

t.test('tool_choice any streams a tool_use block with input_json_delta', async (t) => {
  const stream = client.messages.stream({
    model: 'claude-x', max_tokens: 1000, ...sampling(0.5), messages: question, tools: [weatherTool],
    tool_choice: { type: 'any', disable_parallel_tool_use: true },
  });
  let jsonDeltas = 0;
  stream.on('streamEvent', (e) => { if (e.type === 'content_block_delta' && e.delta.type === 'input_json_delta') jsonDeltas++; });
  const message = await stream.finalMessage();
  t.equal(message.stop_reason, 'tool_use');
  t.ok(jsonDeltas > 0, 'input arrives as input_json_delta events');
  const call = message.content.find((b) => b.type === 'tool_use');
  t.ok(call && call.type === 'tool_use' && new Ajv().compile(weatherTool.input_schema)(call.input));
});

t.test('count_tokens counts what create computes', async (t) => {
  const body = { model: 'claude-x', messages: question, tools: [weatherTool], system: 'Be brief.' };
  const counted = await client.messages.countTokens(body);
  const created = await client.messages.create({ ...body, max_tokens: 1 });
  t.equal(counted.input_tokens, created.usage.input_tokens + (created.usage.cache_read_input_tokens ?? 0));
});

t.test('models list and get', async (t) => {
  const page = await client.models.list();
  t.ok(page.data.some((m) => m.id === 'test-model'));
  const model = await client.models.retrieve('test-model');
  t.equal(model.type, 'model');
});

/** The SDK's APIError for a failed call, to match against the status and the Anthropic error body. */
async function apiErrorOf(call: Promise<unknown>): Promise<{ status?: number; error?: unknown }> {
  try {
    await call;
  } catch (err) {
    return err as { status?: number; error?: unknown };
  }
  throw new Error('the call succeeded');
}

t.test('errors have the API shape and status', async (t) => {
  const bad = new Anthropic({ baseURL: server.url, apiKey: 'wrong', maxRetries: 0 });
  t.match(await apiErrorOf(bad.messages.create({ model: 'x', max_tokens: 5, messages: question })),
    { status: 401, error: { type: 'error', error: { type: 'authentication_error' } } });
  t.match(await apiErrorOf(client.messages.create({ model: 'x', max_tokens: 5, messages: [] })),
    { status: 400, error: { type: 'error', error: { type: 'invalid_request_error', message: /messages/ } } });
  t.match(await apiErrorOf(client.models.retrieve('no-such-model')), { status: 404, error: { error: { type: 'not_found_error' } } });
  const long = 'hello '.repeat(20000);
  t.match(await apiErrorOf(client.messages.create({ model: 'x', max_tokens: 5, messages: [{ role: 'user', content: long }] })),
    { status: 400, error: { error: { type: 'invalid_request_error', message: /^prompt is too long: \d+ tokens > 16383 maximum$/ } } });
  const image = { type: 'image' as const, source: { type: 'base64' as const, media_type: 'image/png' as const, data: 'AAAA' } };
  t.match(await apiErrorOf(client.messages.create({ model: 'x', max_tokens: 5, messages: [{ role: 'user', content: [image] }] })),
    { status: 400, error: { error: { message: /^messages\.0\.content\.0\.source\.data: not a JPEG, PNG, GIF or WebP image$/ } } });
});

t.test('a client that disconnects mid-stream frees its slot', async (t) => {
  const stream = client.messages.stream({ model: 'x', max_tokens: 2000, ...sampling(0), messages: question });
  let deltas = 0;
  for await (const event of stream) {
    if (event.type === 'content_block_delta' && ++deltas === 3) break; // leaving the loop aborts the request
  }
  t.equal(await slotsFreed(server.engine), 0);
});

const fixture = new URL('../../shared/fixtures/claude-code-first-request.json', import.meta.url);
t.test('the captured Claude Code request is accepted as it is', { skip: !existsSync(fixture) && 'no ../shared/fixtures' }, async (t) => {
  const captured = JSON.parse(readFileSync(fixture, 'utf8')) as { url: string; headers: Record<string, string>; body: Record<string, unknown> };
  const { authorization: _auth, 'content-length': _length, host: _host, ...headers } = captured.headers;
  const body = { ...captured.body, max_tokens: 8 }; // only to keep the test short; 128000 is clamped
  const response = await fetch(server.url + captured.url, {
    method: 'POST', headers: { ...headers, authorization: `Bearer ${TEST_KEY}`, 'accept-encoding': 'identity' }, body: JSON.stringify(body),
  });
  t.equal(response.status, 200);
  const text = await response.text();
  const events = [...text.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
  t.equal(events[0], 'message_start');
  t.equal(events.at(-1), 'message_stop');
  const start = JSON.parse(/^data: (.*)$/m.exec(text)![1]);
  t.ok(start.message.usage.input_tokens > 5000, `the long prompt fits the context (${start.message.usage.input_tokens} tokens)`);
});

t.test('a full queue answers 529 overloaded_error with retry-after', async (t) => {
  const small = await startTestServer(await tinyModelPath(), { slots: 1, queue_length: 0, step_token_budget: 64, batch_size: 64, ubatch_size: 64 });
  t.teardown(() => small.close());
  const smallClient = new Anthropic({ baseURL: small.url, apiKey: TEST_KEY, maxRetries: 0 });
  const busy = smallClient.messages.stream({ model: 'x', max_tokens: 3000, ...sampling(0), messages: question });
  await new Promise<void>((resolve) => busy.once('text', () => resolve())); // generating: the only slot is taken
  const response = await fetch(`${small.url}/v1/messages`, {
    method: 'POST',
    headers: { 'x-api-key': TEST_KEY, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'x', max_tokens: 5, messages: question }),
  });
  t.equal(response.status, 529);
  t.equal(response.headers.get('retry-after'), '1');
  t.match(await response.json(), { type: 'error', error: { type: 'overloaded_error' } });
  busy.abort();
  await busy.done().catch(() => {});
  t.equal(await slotsFreed(small.engine), 0, 'the aborted request frees its slot');
  const after = await smallClient.messages.create({ model: 'x', max_tokens: 2, messages: question });
  t.equal(after.type, 'message', 'served again once the slot is free');
});
