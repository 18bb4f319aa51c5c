// The stream's usage at message_start against the real server: the prompt's accounting (computed and read
// from the cache) is the real one from the first event, as Anthropic sends it and clients read it.
import t from 'tap';
import { startTestServer } from './helpers/server.js';
import { tinyModelPath } from './helpers/models.js';
import { postMessage, sseEvents, type SseEvent } from './helpers/http.js';

const server = await startTestServer(await tinyModelPath(), { slots: 1 }, 1);
t.teardown(() => server.close());

const request = { model: 'claude-test', max_tokens: 4, temperature: 0, stream: true, messages: [{ role: 'user', content: `A long question. ${'Context. '.repeat(300)}` }] };

async function streamOf(body: Record<string, unknown>): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  for await (const event of sseEvents(await postMessage(server.url, body))) events.push(event);
  return events;
}

const usageAt = (events: SseEvent[], type: string): Record<string, number> => {
  const data = events.find((e) => e.event === type)!.data as { usage?: Record<string, number>; message?: { usage: Record<string, number> } };
  return data.message?.usage ?? data.usage!;
};

t.test('message_start says what the prompt read from the cache, as message_delta does', async (t) => {
  const cold = await streamOf(request);
  t.equal(cold[0]?.event, 'message_start', 'the stream starts with message_start');
  t.equal(usageAt(cold, 'message_start').cache_read_input_tokens, 0);
  const warm = await streamOf(request);
  const start = usageAt(warm, 'message_start');
  const end = usageAt(warm, 'message_delta');
  t.ok(start.cache_read_input_tokens > 500, `read ${start.cache_read_input_tokens} tokens from the cache`);
  t.equal(start.cache_read_input_tokens, end.cache_read_input_tokens, 'the same as at the end');
  t.equal(start.input_tokens, end.input_tokens);
});

t.test('while a request waits for its slot, the stream stays alive with comments, then starts', async (t) => {
  const first = postMessage(server.url, { ...request, max_tokens: 2000, messages: [{ role: 'user', content: 'Another question.' }] });
  const queued = await postMessage(server.url, request);
  const raw: string[] = [];
  queued.on('data', (chunk: Buffer) => raw.push(String(chunk)));
  await new Promise((resolve) => queued.once('end', resolve));
  (await first).resume();
  const text = raw.join('');
  const start = text.indexOf('event: message_start');
  t.match(text.slice(0, start), /^(: keep-alive\n\n)+$/, 'comments only, while it waited (pings every second here)');
  t.ok(start < text.indexOf('event: content_block_start'), 'then message_start first');
});

t.test("at debug level, a Claude Code session's prompt that departs from its previous one is logged, with the text only under log.prompts", async (t) => {
  const { logSink } = await import('./helpers/server.js');
  for (const prompts of [false, true]) {
    const logs = logSink();
    const debug = await startTestServer(await tinyModelPath(), { slots: 1 }, 5, { log: { level: 'debug', prompts }, logStream: logs.stream });
    const ask = (content: string) => postMessage(debug.url, { ...request, stream: false, messages: [{ role: 'user', content }] }, { 'x-claude-code-session-id': 'session-1' });
    (await ask('First version of the question, long enough.')).resume();
    (await ask('Second version of the question, long enough.')).resume();
    await new Promise((resolve) => setTimeout(resolve, 200));
    await debug.close();
    const line = logs.lines.find((l) => l.msg === "prompt departs from the session's previous one");
    t.match(line, { session: 'session-1', index: Number }, `logged (log.prompts = ${prompts})`);
    t.equal('before' in (line ?? {}), prompts, prompts ? 'with the text around it' : 'without any prompt text');
  }
});
