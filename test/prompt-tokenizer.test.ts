// The prompt tokenizer (native/src/prompt_tokenizer.cpp) cuts a prompt after special tokens and keeps the
// tokens of the pieces it has seen. Its tokens must be exactly llama.cpp's for the whole text: checked on
// every vocabulary llama.cpp ships, with texts made to trip the cutting (special tokens next to each other,
// in whitespace, cut short, multi-byte characters), cold, from its cache, and after the text grows or changes.
import t from 'tap';
import { copyFileSync, readdirSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { readGgufHeader, writeGguf } from '../src/model/gguf.js';
import { loadAddon, type NativeModel } from '../src/native.js';
import { projectRoot } from '../src/paths.js';
import { uniformRandom } from '../src/prng.js';

const vocabDir = join(projectRoot, 'native', 'deps', 'llama.cpp', 'models');
const vocabFiles = readdirSync(vocabDir).filter((f) => /^ggml-vocab-.*\.gguf$/.test(f)).sort();
/** Vocabularies of the common chat models' tokenizer types (BPE, SPM): their long prompts must be cut. */
const MUST_CUT = ['ggml-vocab-qwen2.gguf', 'ggml-vocab-llama-bpe.gguf', 'ggml-vocab-llama-spm.gguf', 'ggml-vocab-gemma-4.gguf'];

const WORDS = ['the', 'file', ' line', 'naïve', '日本語', '🙂', 'x', '  ', ' ', '\n', '\n\n', '\t', '    ', '{"a": 1}', '<', '|', '>',
  '<|', '|>', '</', 'user', 'assistant', 'system', '\r\n', 'ü', '123', '.'];

/** The text of every special token of the vocabulary (control tokens such as <|im_start|>). */
function specialTexts(vocab: NativeModel): string[] {
  const { bytes, offsets, special } = vocab.tokenPieces();
  const texts = new Set<string>();
  for (let id = 0; id < special.length; id++) {
    if (special[id] === 1 && offsets[id + 1] > offsets[id]) texts.add(Buffer.from(bytes.subarray(offsets[id], offsets[id + 1])).toString('utf8'));
  }
  return [...texts];
}

/** About `bytes` of chat-like text: messages framed by special tokens, with special tokens in odd places too. */
function makeText(seed: number, specials: string[], bytes: number): string {
  const next = uniformRandom(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(next() * xs.length)];
  const parts: string[] = [];
  let size = 0;
  while (size < bytes) {
    const r = next();
    let part: string;
    if (specials.length > 0 && r < 0.04) part = pick(specials); // a special token anywhere
    else if (specials.length > 0 && r < 0.06) part = pick(specials).slice(0, 1 + Math.floor(next() * 4)); // cut short
    else if (specials.length > 0 && r < 0.07) part = `${pick(specials)}${pick(specials)}`; // two in a row
    else if (specials.length > 0 && r < 0.09) part = `${pick(['', '\n', ' ', '\n\n'])}${pick(specials)}${pick(['user\n', ' ', '\n', ''])}`;
    else part = pick(WORDS);
    parts.push(part);
    size += Buffer.byteLength(part);
  }
  return parts.join('');
}

for (const file of vocabFiles) {
  t.test(file, (t) => {
    const vocab = new (loadAddon().Model)(join(vocabDir, file), { vocabOnly: true });
    const specials = specialTexts(vocab);
    const same = (text: string, what: string): void => {
      const expected = Array.from(vocab.tokenize(text, true, true));
      t.same(Array.from(vocab.tokenizePrompt(text)), expected, what);
    };
    let cut = false;
    for (let seed = 1; seed <= 2; seed++) {
      const text = makeText(seed, specials, 20_000);
      cut ||= vocab.promptPieceEnds(text).length > 1;
      same(text, `seed ${seed}: cold`);
      same(text, `seed ${seed}: again, from the kept pieces`);
      same(text + makeText(seed + 100, specials, 3_000), `seed ${seed}: grown`);
      const middle = Math.floor(text.length / 2);
      same(`${text.slice(0, middle)}@${text.slice(middle + 1)}`, `seed ${seed}: changed in the middle`);
    }
    // A conversation as a ChatML template writes it, each turn repeating the one before.
    let conversation = `<|im_start|>system\n${makeText(7, [], 12_000)}<|im_end|>\n`;
    for (let turn = 0; turn < 4; turn++) {
      conversation += `<|im_start|>user\n${makeText(20 + turn, [], 3_000)}<|im_end|>\n<|im_start|>assistant\n`;
      same(conversation, `conversation, turn ${turn + 1}`);
      conversation += `Answer ${turn}.<|im_end|>\n`;
    }
    if (MUST_CUT.includes(file)) t.ok(cut, 'long prompts are cut into pieces');
    vocab.free();
    t.end();
  });
}

t.test('a prompt is cut right after special tokens, in pieces of at least 4 KB', (t) => {
  const vocab = new (loadAddon().Model)(join(vocabDir, 'ggml-vocab-qwen2.gguf'), { vocabOnly: true });
  let text = `<|im_start|>system\n${'You are a coding agent. '.repeat(400)}<|im_end|>\n`;
  for (let i = 0; i < 6; i++) text += `<|im_start|>user\n${'Read the file. '.repeat(120)}<|im_end|>\n`;
  const bytes = Buffer.from(text);
  const ends = Array.from(vocab.promptPieceEnds(text));
  t.ok(ends.length > 2, `${ends.length} pieces`);
  t.equal(ends.at(-1), bytes.length, 'the last piece ends the text');
  let start = 0;
  for (const end of ends.slice(0, -1)) {
    t.ok(end - start >= 4096, `piece [${start}, ${end}) is at least 4 KB`);
    t.match(bytes.subarray(0, end).toString(), /<\|im_(start|end)\|>$/, `piece ends with a special token (${end})`);
    start = end;
  }
  vocab.free();
  t.end();
});

t.test('no cut where a longer special token overlaps the one it follows', async (t) => {
  // Qwen2's vocabulary plus control tokens that contain <|im_start|> or run past <|im_end|>: llama.cpp matches
  // the longer token there, so a cut right after <|im_start|> or <|im_end|> would split it.
  const { metadata } = await readGgufHeader(join(vocabDir, 'ggml-vocab-qwen2.gguf'));
  const tokens = metadata.get('tokenizer.ggml.tokens');
  const types = metadata.get('tokenizer.ggml.token_type');
  if (tokens?.type !== 'array' || tokens.itemType !== 'string' || types?.type !== 'array' || types.itemType !== 'int32') {
    throw new Error('unexpected vocabulary layout');
  }
  const CONTROL = 3;
  for (const text of ['<|im_start|>user', '<|im_end|>\n', 'x<|im_start|>']) {
    tokens.value.push(text);
    types.value.push(CONTROL);
  }
  const path = join(t.testdir(), 'overlapping-specials.gguf');
  await writeGguf(path, { metadata, tensors: [] });
  const vocab = new (loadAddon().Model)(path, { vocabOnly: true });
  let text = '';
  for (let i = 0; i < 12; i++) {
    text += `<|im_start|>${i % 3 === 0 ? 'user' : 'assistant'}\n${makeText(40 + i, [], 3_000)}${i % 4 === 1 ? 'x' : ''}<|im_end|>\n`;
  }
  const ends = Array.from(vocab.promptPieceEnds(text));
  t.ok(ends.length > 1, `still cut where nothing overlaps (${ends.length} pieces)`);
  const bytes = Buffer.from(text);
  for (const end of ends.slice(0, -1)) {
    t.match(bytes.subarray(0, end).toString(), /<\|im_start\|>$/, 'cut after a <|im_start|> that no longer token covers');
    t.notMatch(bytes.subarray(end, end + 4).toString(), /^user/, 'not inside <|im_start|>user');
  }
  t.same(Array.from(vocab.tokenizePrompt(text)), Array.from(vocab.tokenize(text, true, true)), 'same tokens as llama.cpp');
  vocab.free();
});

t.test('the kept pieces are shared by every model object of the same file, and not after the file changes', (t) => {
  const { Model, promptPieceCounts } = loadAddon();
  const path = join(t.testdir(), 'vocab.gguf');
  copyFileSync(join(vocabDir, 'ggml-vocab-qwen2.gguf'), path);
  let text = '';
  for (let i = 0; i < 6; i++) text += `<|im_start|>user\n${makeText(60 + i, [], 3_000)}<|im_end|>\n`;
  const pieces = (vocab: NativeModel): number => vocab.promptPieceEnds(text).length;
  const tokenize = (vocab: NativeModel): { reused: number; tokenized: number } => {
    const before = promptPieceCounts();
    t.same(Array.from(vocab.tokenizePrompt(text)), Array.from(vocab.tokenize(text, true, true)), 'same tokens as llama.cpp');
    const after = promptPieceCounts();
    return { reused: after.reused - before.reused, tokenized: after.tokenized - before.tokenized };
  };
  const first = new Model(path, { vocabOnly: true });
  t.ok(pieces(first) > 2, `${pieces(first)} pieces`);
  t.same(tokenize(first), { reused: 0, tokenized: pieces(first) }, 'first model: every piece tokenized');
  const second = new Model(path, { vocabOnly: true });
  t.same(tokenize(second), { reused: pieces(first), tokenized: 0 }, 'second model of the file: every piece reused');
  utimesSync(path, new Date(), new Date(Date.now() + 10_000));
  const changed = new Model(path, { vocabOnly: true });
  t.same(tokenize(changed), { reused: 0, tokenized: pieces(first) }, 'after the file changed: tokenized again');
  for (const vocab of [first, second, changed]) vocab.free();
  t.end();
});
