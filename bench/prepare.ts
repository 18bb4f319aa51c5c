// Prompt preparation on Claude-Code-shaped traffic: Pensieve's render + tokenization of each turn's request
// (src/chat/renderer.ts, as a preparation worker runs it), against tokenizing the whole prompt text with
// llama.cpp's tokenizer every time, which is what a server without kept pieces (llama-server) does.
//
//   npm run bench:prepare -- [--model PATH] [--turns N] [--repeats N] [--prefix-tokens N] [--new-tokens N]
//
// The traffic is bench/claude-code-replay's, one session: the captured first request, its system prompt grown to
// about --prefix-tokens tokens, then turns that add an answer and a tool result. Each repeat starts from a
// fresh renderer (no kept pieces), so turn 1 is cold. Per turn: the prompt's tokens, the whole preparation
// (render + tokenization in pieces), tokenization in pieces alone (a second vocabulary object, so that it too
// keeps only what this run gave it) and llama.cpp's tokenization of the whole text; medians over the repeats.
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { toChatRequest } from '../src/api/convert.js';
import type { CountTokensRequest } from '../src/api/schemas.js';
import { ChatRenderer } from '../src/chat/renderer.js';
import { loadAddon } from '../src/native.js';
import { assistantTurn, filler, firstMessages, loadTraffic, sizePrefix, toolResults, type Message } from './claude-code-traffic.js';
import { repoRoot } from './llama-tools.js';
import { positiveInt } from './options.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    turns: { type: 'string' },
    repeats: { type: 'string' },
    'prefix-tokens': { type: 'string' },
    'new-tokens': { type: 'string' },
  },
});
const model = resolve(values.model ?? resolve(repoRoot, '../shared/models/random-qwen2-small-100m-q8_0.gguf'));
const turns = positiveInt('turns', values.turns, 5);
const repeats = positiveInt('repeats', values.repeats, 5);
const prefixTokens = positiveInt('prefix-tokens', values['prefix-tokens'], 16_000);
const newTokens = positiveInt('new-tokens', values['new-tokens'], 250);

const traffic = loadTraffic(24);
const sizing = ChatRenderer.load(model);
const request = (messages: Message[], system = traffic.base.system): CountTokensRequest =>
  ({ ...traffic.base, system, messages } as unknown as CountTokensRequest);
const probe: Message[] = [{ role: 'user', content: 'x' }];
const { before, after } = await sizePrefix(traffic, prefixTokens,
  async (system) => sizing.prepare(toChatRequest(request(probe, system))).tokens.length);

// One session's requests, turn by turn (answers stand in for the model's: a short text and a Read tool call).
const requests: CountTokensRequest[] = [];
const messages = firstMessages(traffic, 0);
for (let t = 1; t <= turns; t++) {
  requests.push(request(structuredClone(messages)));
  const { message, toolUses } = assistantTurn([{ type: 'text', text: filler(7 + t, 20) }], 0, t);
  messages.push(message, toolResults(toolUses, 0, t, newTokens));
}

const timed = <T>(f: () => T): [T, number] => {
  const t0 = performance.now();
  const value = f();
  return [value, performance.now() - t0];
};
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const { Model } = loadAddon();
const rows = requests.map(() => ({ tokens: 0, prepare: [] as number[], pieces: [] as number[], whole: [] as number[] }));
for (let r = 0; r < repeats; r++) {
  const renderer = ChatRenderer.load(model);
  const vocab = new Model(model, { vocabOnly: true });
  requests.forEach((req, i) => {
    const [prepared, prepareMs] = timed(() => renderer.prepare(toChatRequest(req)));
    // The prompt text back from its tokens (byte-level BPE: exact), to time the tokenizers on it alone.
    const text = vocab.detokenize(prepared.tokens, true);
    const [pieces, piecesMs] = timed(() => vocab.tokenizePrompt(text));
    const [whole, wholeMs] = timed(() => vocab.tokenize(text, true, true));
    if (whole.length !== prepared.tokens.length || whole.some((tok, k) => tok !== prepared.tokens[k] || tok !== pieces[k])) {
      throw new Error(`turn ${i + 1}: the tokens in pieces differ from llama.cpp's for the whole text`);
    }
    rows[i].tokens = whole.length;
    rows[i].prepare.push(prepareMs);
    rows[i].pieces.push(piecesMs);
    rows[i].whole.push(wholeMs);
  });
  vocab.free();
}

const ms = (x: number): string => x.toFixed(1);
console.log(`model: ${model}`);
console.log(`system + tools: ${before} tokens in the fixture${after !== before ? `, grown to ${after}` : ''}; ${turns} turns of ~${newTokens} new tokens; ` +
  `median of ${repeats} repeats, each from a fresh renderer (turn 1 cold)`);
console.log('');
console.log('| turn | prompt tokens | prepare ms (render + pieces) | tokenize in pieces ms | llama.cpp whole-text tokenize ms | whole / pieces |');
console.log('| ---: | ---: | ---: | ---: | ---: | ---: |');
rows.forEach((row, i) => {
  const pieces = median(row.pieces);
  const whole = median(row.whole);
  console.log(`| ${i + 1} | ${row.tokens} | ${ms(median(row.prepare))} | ${ms(pieces)} | ${ms(whole)} | ${(whole / pieces).toFixed(1)} |`);
});
