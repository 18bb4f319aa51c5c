// Reading a model's output back into Anthropic content blocks: llama.cpp's chat parser (through the
// addon) plus the message builder, on outputs written here in a model family's real format.
import t from 'tap';
import { join } from 'node:path';
import { ChatRenderer } from '../src/chat/renderer.js';
import { loadAddon } from '../src/native.js';
import { MessageBuilder, type StreamEvent } from '../src/api/message-builder.js';
import { projectRoot } from '../src/paths.js';
import { tinyModelPath } from './helpers/models.js';

const qwen3Template = join(projectRoot, 'native', 'deps', 'llama.cpp', 'models', 'templates', 'Qwen-Qwen3-0.6B.jinja');
const tool = { type: 'function', function: { name: 'read_file', description: 'Read a file', parameters: { type: 'object', properties: { path: { type: 'string' } }, required: ['path'] } } };

async function transcript(output: string[], showThinking: boolean, enableThinking = true) {
  const renderer = ChatRenderer.load(await tinyModelPath(), qwen3Template);
  const { chat } = renderer.prepare({ messages: [{ role: 'user', content: 'Read /etc/hosts' }], tools: [tool], toolChoice: 'auto', enableThinking });
  const parser = new (loadAddon().ChatParser)({ format: chat.format, generationPrompt: chat.generationPrompt, parser: chat.parser, parseToolCalls: true });
  const builder = new MessageBuilder(showThinking);
  const events: StreamEvent[] = [];
  for (const piece of output) events.push(...builder.apply(parser.update(piece, true)));
  events.push(...builder.apply(parser.update('', false)), ...builder.finish());
  return { content: builder.content, events };
}

// The answer streamed in small pieces, cut across tags and JSON.
const answer = ['<thi', 'nk>\nThe user wants', ' a file.\n</th', 'ink>\n\nSure.', '\n<tool_call>\n{"name": "read_', 'file", "arguments": {"path": "/etc/h', 'osts"}}\n</tool_call>'];

t.test('reasoning, text and a tool call become thinking, text and tool_use blocks', async (t) => {
  const { content, events } = await transcript(answer, true);
  t.match(content, [
    { type: 'thinking', thinking: /The user wants a file\./ },
    { type: 'text', text: /Sure\./ },
    { type: 'tool_use', id: /^toolu_/, name: 'read_file', input: { path: '/etc/hosts' } },
  ]);
  const kinds = events.map((e) => (e.event === 'content_block_delta' ? `delta:${(e.data.delta as { type: string }).type}` : e.event));
  t.same([...new Set(kinds)].sort(), ['content_block_start', 'content_block_stop', 'delta:input_json_delta', 'delta:signature_delta', 'delta:text_delta', 'delta:thinking_delta'].sort());
  const json = events.filter((e) => e.event === 'content_block_delta' && (e.data.delta as { type: string }).type === 'input_json_delta')
    .map((e) => (e.data.delta as { partial_json: string }).partial_json).join('');
  t.same(JSON.parse(json), { path: '/etc/hosts' }, 'the input_json_delta pieces form the whole input');
  const starts = events.filter((e) => e.event === 'content_block_start').map((e) => e.data.index);
  const stops = events.filter((e) => e.event === 'content_block_stop').map((e) => e.data.index);
  t.same(starts, [0, 1, 2]);
  t.same(stops, [0, 1, 2], 'one block open at a time, each closed');
});

t.test('without thinking requested, reasoning is kept out of the answer', async (t) => {
  const { content } = await transcript(answer, false);
  t.same(content.map((b) => b.type), ['text', 'tool_use']);
  t.notMatch(JSON.stringify(content), /The user wants/);
});
