// Cached prefixes kept across restarts (src/engine/prompt-store.ts), on the real engine and model.
import t from 'tap';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { complete, startEngine, testModels } from './helpers/engine.js';
import type { EngineSettings } from '../src/engine/types.js';

const chat = (text: string): string => `<|im_start|>user\n${text}<|im_end|>\n<|im_start|>assistant\n`;
const modelPath = (await testModels())[0].path;

function settings(folder: string, extra: Partial<EngineSettings> = {}): Partial<EngineSettings> {
  return { slots: 2, promptCache: { folder, maxBytes: 1 << 30 }, ...extra };
}

/** The saved prefix files, recursively under the folder (one subfolder per model). */
function savedFiles(folder: string): string[] {
  return readdirSync(folder, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.kv')).map((f) => join(folder, f));
}

const long = (topic: string): string => chat(`${topic}. ${'A line of the long system prompt. '.repeat(60)}`);

t.test('a prefix survives a restart and gives the same output as served cold', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-prompts-'));
  const first = await startEngine(modelPath, settings(folder));
  const prompt = first.tokenize(long('Restart'));
  const cold = await complete(first, prompt, { maxTokens: 12, ignoreEos: true });
  t.equal(cold.final.cachedPromptTokens, 0);
  await first.close();
  t.equal(savedFiles(folder).length, 1, 'saved at shutdown');

  const second = await startEngine(modelPath, settings(folder));
  t.teardown(() => second.close());
  const warm = await complete(second, prompt, { maxTokens: 12, ignoreEos: true });
  t.equal(warm.final.cachedPromptTokens, prompt.length - 1, 'loaded from disk: all but the last prompt token');
  t.same(warm.tokens, cold.tokens, 'identical output');
});

t.test('a prefix evicted from its slot comes back from disk', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-prompts-'));
  const engine = await startEngine(modelPath, settings(folder, { slots: 1 }));
  t.teardown(() => engine.close());
  const a = engine.tokenize(long('First topic'));
  const b = engine.tokenize(long('Another topic entirely'));
  const coldA = await complete(engine, a, { maxTokens: 8, ignoreEos: true });
  for (let i = 0; i < 100 && savedFiles(folder).length < 1; i++) await new Promise((r) => setTimeout(r, 20)); // saved when idle
  await complete(engine, b, { maxTokens: 8, ignoreEos: true }); // takes the only slot: A's prefix leaves the KV cache
  const again = await complete(engine, a, { maxTokens: 8, ignoreEos: true });
  t.equal(again.final.cachedPromptTokens, a.length - 1, 'restored from disk');
  t.same(again.tokens, coldA.tokens);
});

t.test('a corrupt file is discarded, logged, and the request served cold', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-prompts-'));
  const first = await startEngine(modelPath, settings(folder));
  const prompt = first.tokenize(long('Corruption'));
  const cold = await complete(first, prompt, { maxTokens: 10, ignoreEos: true });
  await first.close();
  const [file] = savedFiles(folder);
  const bytes = readFileSync(file);
  bytes[bytes.length - 100] ^= 0xff; // a flipped byte in the KV data
  writeFileSync(file, bytes);

  const logged: string[] = [];
  const second = await startEngine(modelPath, settings(folder), (_level, message) => logged.push(message));
  t.teardown(() => second.close());
  const served = await complete(second, prompt, { maxTokens: 10, ignoreEos: true });
  t.equal(served.final.cachedPromptTokens, 0, 'served cold');
  t.same(served.tokens, cold.tokens);
  const now = existsSync(file) ? readFileSync(file) : undefined;
  t.ok(now === undefined || !now.equals(bytes), 'the corrupt file is gone (a sound copy may have been saved since)');
  t.match(logged, [/discarding .*checksum mismatch/], 'and the reason is logged');
});

t.test('a prefix is saved only once the engine has been idle for a while, not as soon as a request ends', async (t) => {
  // A save holds the engine thread, and a client's next turn often comes right after the last one ended.
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-prompts-'));
  const engine = await startEngine(modelPath, settings(folder));
  t.teardown(() => engine.close());
  await complete(engine, engine.tokenize(long('Idle save')), { maxTokens: 4, ignoreEos: true });
  await new Promise((r) => setTimeout(r, 300));
  t.equal(savedFiles(folder).length, 0, 'not saved 300 ms after the request ended');
  for (let i = 0; i < 150 && savedFiles(folder).length < 1; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(savedFiles(folder).length, 1, 'saved once idle for a second');
});
