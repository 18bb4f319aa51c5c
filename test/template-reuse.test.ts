// Prompt caching needs a conversation's prompt to start with the previous turn's prompt: then a new turn
// only computes its new tokens. This checks that property on llama.cpp's chat templates (the ones shipped
// in its models/templates folder) for a Claude-Code-shaped exchange: system prompt and tools, a tool call
// and its result, then the answer and a new user message.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAddon } from '../src/native.js';
import { projectRoot } from '../src/paths.js';
import { tinyModelPath } from './helpers/models.js';

const templates = join(projectRoot, 'native', 'deps', 'llama.cpp', 'models', 'templates');

/** Templates whose next-turn prompt extends the previous prompt entirely (thinking off and on). */
const FULL = [
  'Qwen-Qwen2.5-7B-Instruct', 'Qwen3-Coder', 'meta-llama-Llama-3.1-8B-Instruct', 'meta-llama-Llama-3.3-70B-Instruct',
  'microsoft-Phi-3.5-mini-instruct', 'ibm-granite-granite-4.0', 'deepseek-ai-DeepSeek-R1-Distill-Qwen-32B',
  'deepseek-ai-DeepSeek-V3.1', 'GLM-4.6', 'moonshotai-Kimi-K2', 'openai-gpt-oss-120b', 'unsloth-mistral-Devstral-Small-2507',
  'mistralai-Ministral-3-14B-Reasoning-2512', 'google-gemma-4-31B-it', 'HuggingFaceTB-SmolLM3-3B',
];
/** Templates that re-render the last turn differently (e.g. drop past reasoning, or an empty think block in the
 * generation prompt): everything up to the last answer is reused, that answer is computed again. */
const ALL_BUT_LAST_TURN = ['Qwen-Qwen3-0.6B', 'NousResearch-Hermes-3-Llama-3.1-8B-tool_use', 'MiniMax-M2'];
/** Templates that re-render every answer since the last user message (Qwen3.5 drops their empty think blocks once
 * a new user message comes): reuse stops at that user message. Tool results alone keep the whole prefix. */
const UP_TO_LAST_USER_MESSAGE = ['Qwen3.5-4B'];

const tools = [{ type: 'function', function: { name: 'Read', description: 'Read a file', parameters: { type: 'object', properties: { path: { type: 'string' } }, required: ['path'] } } }];
const RESULT = 'console.log(1) // the tool result';
const QUESTION = 'Look at main.ts';
const history = [
  { role: 'system', content: 'You are an agent for software engineering. '.repeat(5) },
  { role: 'user', content: QUESTION },
  { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'Read', arguments: '{"path":"main.ts"}' } }] },
  { role: 'tool', tool_call_id: 'call_1', content: RESULT },
];
const nextTurn = [{ role: 'assistant', content: 'It prints 1.', reasoning_content: 'Short file.' }, { role: 'user', content: 'Now fix it' }];

const commonPrefix = (a: string, b: string): number => {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return i;
};

t.test('a new turn reuses the previous prompt', { skip: !existsSync(templates) && 'llama.cpp source not present' }, async (t) => {
  const addon = loadAddon();
  const vocab = new addon.Model(await tinyModelPath(), { vocabOnly: true });
  t.teardown(() => vocab.free());
  for (const name of [...FULL, ...ALL_BUT_LAST_TURN, ...UP_TO_LAST_USER_MESSAGE]) {
    const chat = new addon.ChatTemplates(vocab, readFileSync(join(templates, `${name}.jinja`), 'utf8'));
    for (const enableThinking of [false, true]) {
      const render = (messages: unknown[]): string => chat.render(JSON.stringify({ messages, tools, enableThinking })).prompt;
      const before = render(history);
      const after = render([...history, ...nextTurn]);
      const reused = commonPrefix(before, after);
      const label = `${name} (thinking ${enableThinking}): ${reused} of ${before.length} characters`;
      if (FULL.includes(name)) t.equal(reused, before.length, label);
      else if (ALL_BUT_LAST_TURN.includes(name)) t.ok(reused >= before.indexOf(RESULT) + RESULT.length, label);
      else t.ok(reused >= before.indexOf(QUESTION) + QUESTION.length, label);
    }
  }
});
