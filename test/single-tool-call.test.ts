// With disable_parallel_tool_use (or one forced tool), an answer holds exactly one tool_use block and ends
// once that call is complete, whatever the model would sample next (issue 14: it used to run on to
// max_tokens, with a second, empty call).
import t from 'tap';
import { startTestServer } from './helpers/server.js';
import { sharedModelPath, tinyModelPath } from './helpers/models.js';
import { postMessage, readJson, sseEvents } from './helpers/http.js';

const weather = {
  name: 'get_weather',
  description: 'Get the weather',
  input_schema: {
    type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['c', 'f'] } },
    required: ['city', 'unit'], additionalProperties: false,
  },
};
const body = (toolChoice: Record<string, unknown>, stream: boolean) => ({
  model: 'x', max_tokens: 1500, stream, tool_choice: toolChoice, tools: [weather],
  messages: [{ role: 'user', content: 'Weather in Oslo, fahrenheit?' }],
});

const models = [{ name: 'generated tiny model', path: await tinyModelPath() }];
const shared = sharedModelPath('random-qwen2-tiny-10m-q8_0.gguf');
if (shared) models.push({ name: 'shared tiny model', path: shared });

for (const model of models) {
  t.test(model.name, async (t) => {
    const server = await startTestServer(model.path, { slots: 2 });
    t.teardown(() => server.close());
    const answer = await readJson(await postMessage(server.url, body({ type: 'any', disable_parallel_tool_use: true }, false)));
    const content = answer.content as Array<{ type: string; input?: Record<string, unknown> }>;
    t.equal(content.filter((b) => b.type === 'tool_use').length, 1, 'disable_parallel_tool_use: one tool_use block');
    t.equal(answer.stop_reason, 'tool_use', 'ended by the call, not by max_tokens');
    t.match(content.find((b) => b.type === 'tool_use')?.input, { city: String, unit: /^[cf]$/ }, 'its input is whole');
    t.ok((answer.usage as { output_tokens: number }).output_tokens < 1500, 'the generation stopped with the call');

    const events = [];
    for await (const event of sseEvents(await postMessage(server.url, body({ type: 'tool', name: 'get_weather' }, true)))) events.push(event);
    const starts = events.filter((e) => e.event === 'content_block_start' && (e.data.content_block as { type: string }).type === 'tool_use');
    t.equal(starts.length, 1, 'one forced tool, streaming: one tool_use block');
    t.match(events.find((e) => e.event === 'message_delta')?.data, { delta: { stop_reason: 'tool_use' } });
    t.equal(events.at(-1)?.event, 'message_stop');
    t.equal(server.engine.status().slotsBusy, 0, 'no slot left busy');
  });
}
