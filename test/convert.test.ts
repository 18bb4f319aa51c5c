// The conversion of Anthropic requests into what the chat template renders, alone (no model).
import t from 'tap';
import { toChatRequest } from '../src/api/convert.js';
import type { CountTokensRequest } from '../src/api/schemas.js';

const request = (system: CountTokensRequest['system']): CountTokensRequest =>
  ({ model: 'claude-test', system, messages: [{ role: 'user', content: 'hi' }] }) as CountTokensRequest;

const systemOf = (r: CountTokensRequest): unknown => toChatRequest(r).messages[0];

t.test("Claude Code's billing header is left out of the prompt, so sessions share what follows it", async (t) => {
  const session = (suffix: string) => request([
    { type: 'text', text: `x-anthropic-billing-header: cc_version=2.1.332.${suffix}; cc_entrypoint=sdk-cli;` },
    { type: 'text', text: 'You are an agent.', cache_control: { type: 'ephemeral' } },
    { type: 'text', text: 'Long instructions.' },
  ]);
  t.same(systemOf(session('4a6')), { role: 'system', content: 'You are an agent.\nLong instructions.' });
  t.same(systemOf(session('4a6')), systemOf(session('2c6')), 'two sessions render the same system prompt');
  t.same(systemOf(request('x-anthropic-billing-header: cc_version=1.0.abc;\nYou are an agent.')),
    { role: 'system', content: 'You are an agent.' }, 'as the first line of a string system prompt too');
  t.same(systemOf(request('A system prompt that mentions x-anthropic-billing-header: later.')),
    { role: 'system', content: 'A system prompt that mentions x-anthropic-billing-header: later.' }, 'only a leading header goes');
  t.same(toChatRequest(request([{ type: 'text', text: 'x-anthropic-billing-header: cc_version=1;' }])).messages, [{ role: 'user', content: 'hi' }],
    'a system prompt of nothing else leaves no system message');
});
