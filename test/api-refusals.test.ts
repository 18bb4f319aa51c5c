// Hostile requests against the real server (HTTP, prep pool, engine thread) on the generated tiny model: they
// get a 4xx in the API's shape that says what is wrong, never a 500: nesting too deep to hand to the prep
// pool, tool schemas that llama.cpp cannot use, duplicate tool names, a prompt too long to be worth tokenizing.
import t, { type Test } from 'tap';
import { startTestServer, TEST_KEY } from './helpers/server.js';
import { tinyModelPath } from './helpers/models.js';
import { postMessage, readBody, readJson, send } from './helpers/http.js';

const server = await startTestServer(await tinyModelPath(), { slots: 1 });
t.teardown(() => server.close());

const hello = { model: 'claude-test', max_tokens: 4, messages: [{ role: 'user', content: 'Hi' }] };

async function refused(t: Test, body: Record<string, unknown> | string, message: RegExp, url = '/v1/messages'): Promise<void> {
  const response = await send(`${server.url}${url}`, { method: 'POST', headers: { 'x-api-key': TEST_KEY, 'content-type': 'application/json' }, body });
  t.equal(response.statusCode, 400);
  t.match(await readJson(response), { type: 'error', error: { type: 'invalid_request_error', message } });
}

t.test('nesting deeper than the limit is a 400, wherever it is', async (t) => {
  const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
  await refused(t, `${JSON.stringify(hello).slice(0, -1)},"foo":${deep(10_000)}}`, /^foo(\.0)+: nested deeper than 64 levels$/);
  await refused(t, `${JSON.stringify(hello).slice(0, -1)},"foo":${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}}`, /^foo(\.a)+: nested deeper than/);
  const toolUse = JSON.stringify({
    ...hello,
    messages: [
      { role: 'user', content: 'Call it' },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'f', input: { x: 'DEEP' } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'done' }] },
    ],
  });
  await refused(t, toolUse.replace('"DEEP"', deep(10_000)), /^messages\.1\.content\.0\.input\.x(\.0)+: nested deeper than/);
  let anyOf: Record<string, unknown> = { type: 'string' };
  for (let i = 0; i < 2000; i++) anyOf = { anyOf: [anyOf] };
  await refused(t, { ...hello, tool_choice: { type: 'any' }, tools: [{ name: 'deep', input_schema: { type: 'object', properties: { x: anyOf } } }] },
    /^tools\.0\.input_schema\.properties\.x(\.anyOf\.0)+(\.anyOf)?: nested deeper than/);
});

t.test('a tool schema that llama.cpp cannot use is a 400 that names the tool and what cannot be honoured', async (t) => {
  const tools = (schema: Record<string, unknown>) => [
    { name: 'fine', input_schema: { type: 'object', properties: { a: { type: 'string' } } } },
    { name: 'broken', input_schema: schema },
  ];
  const property = (x: Record<string, unknown>) => ({ type: 'object', properties: { x }, required: ['x'] });
  const cycle = { type: 'object', $defs: { a: { $ref: '#/$defs/b' }, b: { $ref: '#/$defs/a' } }, properties: { x: { $ref: '#/$defs/a' } }, required: ['x'] };
  for (const tool_choice of [{ type: 'any' }, { type: 'auto' }]) {
    await refused(t, { ...hello, tool_choice, tools: tools(cycle) }, /^tools: the input_schema of tool 'broken' cannot be held to by a grammar: llama\.cpp refuses the grammar made from it \(a \$ref cycle/);
    await refused(t, { ...hello, tool_choice, tools: tools(property({ type: 'string', minLength: 1_000_000 })) },
      /^tools: the input_schema of tool 'broken' cannot be held to by a grammar: its grammar has a repetition \{1000000,\} over llama\.cpp's limit of 2000 \(from a minLength, a minItems or a count in a pattern\)$/);
    await refused(t, { ...hello, tool_choice, tools: tools(property({ type: 'array', minItems: 100_000 })) }, /^tools: the input_schema of tool 'broken' .* repetition \{99999,\} over/);
    // llama.cpp's grammar parser would loop on these for as good as ever, in the engine thread before this check.
    for (const x of [{ type: 'array', minItems: 1999, maxItems: 5 }, { type: 'string', minLength: 10, maxLength: 3 }, { type: 'string', pattern: '^a{5,2}$' }])
      await refused(t, { ...hello, tool_choice, tools: tools(property(x)) }, /^tools: the input_schema of tool 'broken' .* repetition \{\d+,\d+\} whose maximum is below its minimum/);
  }
  await refused(t, { ...hello, tools: tools(property({ $ref: '#' })) },
    /^tools: the input_schema of tool 'broken' cannot be used: JSON schema error at #\/properties\/x: unsupported \$ref #/);
  const response = await postMessage(server.url, { ...hello, tool_choice: { type: 'any' }, tools: tools(property({ type: 'string', maxLength: 1000 })) });
  t.equal(response.statusCode, 200, 'bounds within the limit are held to');
  await readBody(response);
});

t.test('duplicate tool names are a 400', async (t) => {
  const tool = { name: 'lookup', input_schema: { type: 'object' } };
  const body = { ...hello, tools: [tool, { name: 'other', input_schema: { type: 'object' } }, tool] };
  await refused(t, body, /^tools\.2\.name: tool names must be unique: 'lookup' is also tools\.0\.name$/);
  const { max_tokens: _max, ...count } = body;
  await refused(t, count, /^tools\.2\.name: tool names must be unique/, '/v1/messages/count_tokens');
});

t.test('a prompt whose length proves it too long is refused without being tokenized', async (t) => {
  const tokenized = async (): Promise<number> =>
    Number(/^pensieve_prompt_pieces_tokenized_total (\d+)$/m.exec(await readBody(await send(`${server.url}/metrics`)))?.[1]);
  const before = await tokenized();
  await refused(t, { ...hello, messages: [{ role: 'user', content: 'hello world '.repeat(800_000) }] }, /^prompt is too long: \d+ tokens > 16383 maximum$/);
  t.equal(await tokenized(), before, 'no piece of it was tokenized');
  const counted = await send(`${server.url}/v1/messages/count_tokens`, {
    method: 'POST', headers: { 'x-api-key': TEST_KEY }, body: { model: 'x', messages: [{ role: 'user', content: 'hello world '.repeat(2000) }] },
  });
  t.equal(counted.statusCode, 200, 'count_tokens counts a prompt of any length');
  t.ok(((await readJson(counted)).input_tokens as number) > 2000);
});

t.test('text with an unpaired surrogate (an emoji cut in half) is served, with U+FFFD in its place', async (t) => {
  const body = JSON.stringify({ ...hello, messages: [{ role: 'user', content: 'cut \ud83d' }] }); // JSON.stringify writes the \\ud83d escape
  t.match(body, /cut \\ud83d/);
  const response = await send(`${server.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': TEST_KEY }, body });
  t.equal(response.statusCode, 200);
  t.match(await readJson(response), { type: 'message' });
});
