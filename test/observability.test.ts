// /metrics, /health and the request logs, against the real server on the generated tiny model.
import t from 'tap';
import { logSink, startTestServer } from './helpers/server.js';
import { tinyModelPath } from './helpers/models.js';
import { postMessage, readBody, readJson, send, sseEvents } from './helpers/http.js';

const SECRET_PROMPT = 'zebra-umbrella-7781';
const question = (stream: boolean) => ({
  model: 'claude-test', max_tokens: 8, temperature: 0, stream, messages: [{ role: 'user', content: `Say ${SECRET_PROMPT}` }],
});

const logs = logSink();
const server = await startTestServer(await tinyModelPath(), { slots: 2 }, 5, { log: { level: 'info' }, logStream: logs.stream });
t.teardown(() => server.close());

/** A series' value in a /metrics text; NaN when absent. */
function seriesValue(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? NaN : Number(line.slice(series.length + 1));
}

t.test('a streamed and a plain message show up in /metrics', async (t) => {
  for await (const _ of sseEvents(await postMessage(server.url, question(true))));
  await readBody(await postMessage(server.url, question(false)));
  const response = await send(`${server.url}/metrics`);
  t.equal(response.statusCode, 200);
  t.match(response.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  const text = await readBody(response);
  const value = (series: string): number => seriesValue(text, series);
  t.equal(value('pensieve_http_requests_total{method="POST",route="/v1/messages",status="200"}'), 2);
  t.equal(value('pensieve_time_to_first_token_seconds_count'), 2);
  t.ok(value('pensieve_inter_token_latency_seconds_count') > 0, 'inter-token latencies');
  t.ok(value('pensieve_generated_tokens_total') >= 2, 'generated tokens');
  t.ok(value('pensieve_prompt_tokens_total') > 10, 'prompt tokens');
  t.ok(value('pensieve_cached_prompt_tokens_total') > 0, 'the second, identical prompt came from the prefix cache');
  t.equal(value('pensieve_queue_depth'), 0);
  t.equal(value('pensieve_slots_busy'), 0);
  t.equal(value('pensieve_slots'), 2);
  t.equal(value('pensieve_kv_cells'), 65536, 'the pool');
  t.equal(value('pensieve_preempted_total'), 0, 'nothing preempted in a pool this large');
  const used = value('pensieve_kv_cells_used');
  t.ok(used > 10 && used < 1000, `the cells in use are the prompt's, kept as a cached prefix (${used})`);
  t.ok(value('process_resident_memory_bytes') > 0);
  const stops = text.split('\n').filter((l) => l.startsWith('pensieve_generations_total{'));
  t.ok(stops.length > 0, 'generations by stop reason');
});

t.test('a long prompt sent again is tokenized from kept pieces (/metrics)', async (t) => {
  const value = async (series: string): Promise<number> => seriesValue(await readBody(await send(`${server.url}/metrics`)), series);
  const long = { ...question(false), max_tokens: 2, system: 'You are a careful assistant. '.repeat(600) };
  await readBody(await postMessage(server.url, long));
  const tokenized = await value('pensieve_prompt_pieces_tokenized_total');
  const reused = await value('pensieve_prompt_pieces_reused_total');
  t.ok(tokenized >= 2, `the first request's prompt was cut into pieces (${tokenized} tokenized)`);
  await readBody(await postMessage(server.url, { ...long, messages: [...long.messages, { role: 'assistant', content: 'ok' }, { role: 'user', content: 'again' }] }));
  t.ok(await value('pensieve_prompt_pieces_reused_total') > reused, 'the next turn reused its pieces');
});

t.test('/health summarizes the server', async (t) => {
  const health = await readJson(await send(`${server.url}/health`));
  t.match(health, {
    status: 'ok', model: 'test-model', slots: 2, slotsBusy: 0, queued: 0,
    tokensPerSecond: Number, cacheHitRate: Number, rssBytes: Number, uptime: Number,
  });
  t.ok((health.cacheHitRate as number) > 0 && (health.cacheHitRate as number) <= 1);
  t.ok((health.rssBytes as number) > 1e6);
});

t.test('log lines carry the request id of the request-id header, and no prompt', async (t) => {
  const response = await postMessage(server.url, question(false));
  await readBody(response);
  const id = response.headers['request-id'];
  t.match(id, /^req_[0-9a-f]{24}$/);
  const mine = logs.lines.filter((l) => l.reqId === id);
  t.ok(mine.some((l) => l.msg === 'incoming request'), 'the request is logged');
  t.ok(mine.some((l) => l.msg === 'generation finished'), 'so is its generation');
  t.ok(mine.some((l) => l.msg === 'request completed' && (l.res as { statusCode: number }).statusCode === 200));
  t.notOk(JSON.stringify(logs.lines).includes(SECRET_PROMPT), 'the prompt is not logged');
});

t.test('log.prompts = true logs them', async (t) => {
  const verbose = logSink();
  const other = await startTestServer(await tinyModelPath(), { slots: 1 }, 5, { log: { level: 'info', prompts: true }, logStream: verbose.stream });
  t.teardown(() => other.close());
  const response = await postMessage(other.url, question(false));
  await readBody(response);
  const prompt = verbose.lines.find((l) => l.msg === 'prompt' && l.reqId === response.headers['request-id']);
  t.ok(prompt && JSON.stringify(prompt).includes(SECRET_PROMPT));
});
