// Faults under load against the real server: clients that vanish mid-stream, and a burst beyond the queue.
import t from 'tap';
import type { IncomingMessage } from 'node:http';
import { startTestServer, type TestServer } from './helpers/server.js';
import { tinyModelPath } from './helpers/models.js';
import { eventually, longStream, postMessage, readBody, readJson, send, sseEvents, type SseEvent } from './helpers/http.js';

const idle = async (server: TestServer): Promise<boolean> => {
  const { slotsBusy, queued } = server.engine.status();
  const health = await readJson(await send(`${server.url}/health`));
  return slotsBusy === 0 && queued === 0 && health.slotsBusy === 0 && health.queued === 0;
};

/** Reads a stream until `until` (an event type) arrives, then drops the connection. */
async function readThenDisconnect(response: IncomingMessage, until: string): Promise<void> {
  for await (const { event } of sseEvents(response)) if (event === until) break;
  response.destroy();
}

t.test('100 clients that disconnect mid-stream leave no slot busy', async (t) => {
  const server = await startTestServer(await tinyModelPath(), { slots: 4, queue_length: 128, pool_tokens: 32768, max_context: 8192 });
  t.teardown(() => server.close());
  // Half leave while queued or prefilling (after message_start), half once tokens flow.
  await Promise.all(
    Array.from({ length: 100 }, async (_, i) => {
      const response = await postMessage(server.url, longStream());
      t.equal(response.statusCode, 200);
      await readThenDisconnect(response, i % 2 === 0 ? 'message_start' : 'content_block_delta');
    }),
  );
  t.ok(await eventually(() => idle(server)), 'every slot is free and the queue is empty');
  const metrics = await readBody(await send(`${server.url}/metrics`));
  t.match(metrics, /^pensieve_http_requests_total\{method="POST",route="\/v1\/messages",status="499"\} 100$/m, 'counted as closed by the client');
  const used = Number(/^pensieve_kv_cells_used (\d+)$/m.exec(metrics)?.[1]);
  t.ok(used >= 0 && used <= 32768, `the pool's cells in use (${used}) are cached prefixes at most`);
  const answer = await postMessage(server.url, { ...longStream(8), stream: false });
  t.equal(answer.statusCode, 200, 'the server still answers');
  t.match(await readJson(answer), { type: 'message' });
});

t.test('a burst beyond the queue gets 529 overloaded_error with retry-after; then the server serves normally', async (t) => {
  const server = await startTestServer(await tinyModelPath(), { slots: 1, queue_length: 2, pool_tokens: 8192, max_context: 8192 });
  t.teardown(() => server.close());
  const responses = await Promise.all(Array.from({ length: 12 }, () => postMessage(server.url, longStream())));
  const refused = responses.filter((r) => r.statusCode === 529);
  const accepted = responses.filter((r) => r.statusCode === 200);
  t.equal(refused.length + accepted.length, 12, 'only 200s and 529s');
  t.ok(refused.length >= 9, `at most slots + queue are accepted (${accepted.length} were)`);
  for (const response of refused) {
    t.equal(response.headers['retry-after'], '1');
    t.match(await readJson(response), { type: 'error', error: { type: 'overloaded_error' } });
  }
  for (const response of accepted) response.destroy();
  t.ok(await eventually(() => idle(server)), 'the accepted streams were cancelled');

  const stream = await postMessage(server.url, longStream(16));
  t.equal(stream.statusCode, 200);
  const events: string[] = [];
  for await (const { event } of sseEvents(stream)) events.push(event);
  t.same(events.slice(-2), ['message_delta', 'message_stop'], 'a new stream runs to its end');
  const health = await send(`${server.url}/health`);
  t.equal(health.statusCode, 200);
  await readBody(health);
});

t.test('two streams that together outgrow the KV pool both run to their end: one is preempted and resumed', async (t) => {
  const server = await startTestServer(await tinyModelPath(), { slots: 2, pool_tokens: 1024, max_context: 1024 });
  t.teardown(() => server.close());
  const responses = await Promise.all([0, 1].map(() => postMessage(server.url, { ...longStream(900), temperature: 0 })));
  const ends = await Promise.all(responses.map(async (response) => {
    t.equal(response.statusCode, 200);
    const events: SseEvent[] = [];
    for await (const event of sseEvents(response)) events.push(event);
    return events;
  }));
  for (const events of ends) {
    t.same(events.slice(-2).map((e) => e.event), ['message_delta', 'message_stop'], 'the stream ends normally');
    t.match(events.at(-2)!.data, { delta: { stop_reason: 'max_tokens' }, usage: { output_tokens: 900 } });
  }
  const metrics = await readBody(await send(`${server.url}/metrics`));
  t.ok(Number(/^pensieve_preempted_total (\d+)$/m.exec(metrics)?.[1]) >= 1, 'a request was preempted to make room');
  t.ok(await eventually(() => idle(server)), 'every slot is free');
});
