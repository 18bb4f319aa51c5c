// Prompt preparation on Claude-Code-shaped traffic: Pensieve's render + tokenization of each turn's request
// (src/chat/renderer.ts, as a preparation worker runs it), against tokenizing the whole prompt text with
// llama.cpp's tokenizer every time, which is what a server without kept pieces (llama-server) does.
//
//   npm run bench:prepare -- [--model PATH] [--turns N] [--repeats N] [--prefix-tokens N] [--new-tokens N]
//
// The traffic is bench/claude-code-replay's, one session: the captured first request, its system prompt grown to
// about --prefix-tokens tokens, then turns that add an answer and a tool result. Each repeat loads the model's
// vocabulary from a copy of the model file whose modification time changed, so nothing is kept from before and
// turn 1 is cold. Per turn: the prompt's tokens, the preparation's time and the pieces it tokenized or reused,
// and llama.cpp's tokenization of the whole text (checked to give the same tokens); medians over the repeats.
import { copyFileSync, mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { toChatRequest } from '../src/api/convert.js';
import type { CountTokensRequest } from '../src/api/schemas.js';
import { ChatRenderer } from '../src/chat/renderer.js';
import { loadAddon } from '../src/native.js';
import { assistantTurn, filler, firstMessages, loadTraffic, sizePrefix, toolResults, type Message } from './claude-code-traffic.js';
import { repoRoot } from './llama-tools.js';
import { median, positiveInt } from './options.js';

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

const { Model, promptPieceCounts } = loadAddon();
const dir = mkdtempSync(join(tmpdir(), 'pensieve-prepare-'));
const copy = join(dir, 'model.gguf');
copyFileSync(model, copy);
const rows = requests.map(() => ({ tokens: 0, prepare: [] as number[], whole: [] as number[], pieces: '' }));
for (let r = 0; r < repeats; r++) {
  utimesSync(copy, new Date(), new Date(Date.now() + (r + 1) * 1000)); // a new file to the kept pieces
  const renderer = ChatRenderer.load(copy);
  const vocab = new Model(copy, { vocabOnly: true });
  requests.forEach((req, i) => {
    const before = promptPieceCounts();
    const [prepared, prepareMs] = timed(() => renderer.prepare(toChatRequest(req)));
    const after = promptPieceCounts();
    // The prompt text back from its tokens (byte-level BPE: exact), to time llama.cpp's tokenizer on it alone.
    const text = vocab.detokenize(prepared.tokens, true);
    const [whole, wholeMs] = timed(() => vocab.tokenize(text, true, true));
    if (whole.length !== prepared.tokens.length || whole.some((tok, k) => tok !== prepared.tokens[k])) {
      throw new Error(`turn ${i + 1}: the tokens in pieces differ from llama.cpp's for the whole text`);
    }
    rows[i].tokens = whole.length;
    rows[i].prepare.push(prepareMs);
    rows[i].whole.push(wholeMs);
    rows[i].pieces = `${after.tokenized - before.tokenized} / ${after.reused - before.reused}`;
  });
  vocab.free();
}
rmSync(dir, { recursive: true, force: true });

const ms = (x: number): string => x.toFixed(1);
console.log(`model: ${model}`);
console.log(`system + tools: ${before} tokens in the fixture${after !== before ? `, grown to ${after}` : ''}; ${turns} turns of ~${newTokens} new tokens; ` +
  `median of ${repeats} repeats, each cold at turn 1`);
console.log('');
console.log('| turn | prompt tokens | Pensieve prepare ms (render + tokenize) | pieces tokenized / reused | llama.cpp whole-text tokenize ms |');
console.log('| ---: | ---: | ---: | ---: | ---: |');
rows.forEach((row, i) => {
  console.log(`| ${i + 1} | ${row.tokens} | ${ms(median(row.prepare))} | ${row.pieces} | ${ms(median(row.whole))} |`);
});
