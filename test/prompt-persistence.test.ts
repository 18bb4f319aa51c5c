// Cached prefixes kept across restarts (src/engine/prompt-store.ts), on the real engine and model.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { complete, startEngine, testModels } from './helpers/engine.js';
import { drainFifo, fillFifo } from './helpers/fifo.js';
import type { EngineSettings } from '../src/engine/types.js';
import { modelFingerprint, prefixFile } from '../src/engine/prompt-store.js';

const chat = (text: string): string => `<|im_start|>user\n${text}<|im_end|>\n<|im_start|>assistant\n`;
const modelPath = (await testModels())[0].path;

function settings(folder: string, extra: Partial<EngineSettings> = {}): Partial<EngineSettings> {
  return { slots: 2, promptCache: { folder, maxBytes: 1 << 30 }, ...extra };
}

/** The saved prefix files, recursively under the folder (one subfolder per model). */
function savedFiles(folder: string): string[] {
  return readdirSync(folder, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.kv')).map((f) => join(folder, f));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const long = (topic: string): string => chat(`${topic}. ${'A line of the long system prompt. '.repeat(60)}`);

t.test('a prefix survives a restart and gives the same output as served cold', async (t) => {
  const folder = t.testdir();
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
  const folder = t.testdir();
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
  const folder = t.testdir();
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
  // A save copies the slot's state on the engine thread, and a client's next turn often comes right after the last one ended.
  const folder = t.testdir();
  const engine = await startEngine(modelPath, settings(folder));
  t.teardown(() => engine.close());
  await complete(engine, engine.tokenize(long('Idle save')), { maxTokens: 4, ignoreEos: true });
  await new Promise((r) => setTimeout(r, 300));
  t.equal(savedFiles(folder).length, 0, 'not saved 300 ms after the request ended');
  for (let i = 0; i < 150 && savedFiles(folder).length < 1; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(savedFiles(folder).length, 1, 'saved once idle for a second');
});

t.test('a prefix evicted while the engine is never idle is saved before it goes, and comes back from disk', async (t) => {
  const folder = t.testdir();
  const engine = await startEngine(modelPath, settings(folder, { slots: 1 }));
  t.teardown(() => engine.close());
  const a = engine.tokenize(long('Evicted at once'));
  const b = engine.tokenize(long('The request that evicts it'));
  const coldA = await complete(engine, a, { maxTokens: 8, ignoreEos: true });
  // At once, long before an idle-time save: B takes the only slot, and A's prefix would be lost.
  await complete(engine, b, { maxTokens: 8, ignoreEos: true });
  for (let i = 0; i < 100 && savedFiles(folder).length < 1; i++) await sleep(20); // written by the saver thread
  const again = await complete(engine, a, { maxTokens: 8, ignoreEos: true });
  t.equal(again.final.cachedPromptTokens, a.length - 1, 'restored from disk');
  t.same(again.tokens, coldA.tokens);
});


/** The file a slot's prefix is saved to: it holds the prompt and the output but its last token (never decoded). */
function savedPrefixFile(folder: string, prompt: Int32Array, output: number[]): string {
  return prefixFile(join(folder, modelFingerprint(modelPath)), Int32Array.from([...prompt, ...output.slice(0, -1)]));
}

t.test('the engine answers requests while a prefix is being written: the save runs on its own thread', { skip: process.platform === 'win32' && 'no FIFOs' }, async (t) => {
  // The save's temporary file is made a FIFO, so writing it blocks until the test reads it. Were the save on
  // the engine thread, the second request would get no answer until then.
  const folder = t.testdir();
  const engine = await startEngine(modelPath, settings(folder));
  t.teardown(() => engine.close());
  const prompt = engine.tokenize(long('Blocked save'));
  const first = await complete(engine, prompt, { maxTokens: 4, ignoreEos: true });
  const file = savedPrefixFile(folder, prompt, first.tokens);
  execFileSync('mkfifo', [`${file}.tmp`]);
  await sleep(1500); // the engine has been idle for a second: the save has started, and waits on the FIFO

  const second = complete(engine, engine.tokenize(chat('A short question')), { maxTokens: 4, ignoreEos: true });
  const answered = await Promise.race([second.then(() => true), sleep(10_000).then(() => false)]);
  t.ok(answered, 'a request is answered while the save is blocked');

  const written = await drainFifo(`${file}.tmp`, 20_000);
  t.equal(written.subarray(0, 8).toString(), 'PNSVPC01', 'the save wrote the prefix file');
  for (let i = 0; i < 100 && !existsSync(file); i++) await sleep(20);
  t.ok(existsSync(file), 'and renamed it into place');
  await second;
});


t.test('two prefixes evicted at once are both saved, the second while the first is still being written', { skip: process.platform === 'win32' && 'no FIFOs' }, async (t) => {
  // Both saves' temporary files are FIFOs, so the first save blocks until the test reads it; the second must be
  // queued behind it rather than skipped (a skipped prefix is lost: its slot is overwritten at once).
  const folder = t.testdir();
  const engine = await startEngine(modelPath, settings(folder));
  t.teardown(() => engine.close());
  const [a, b, c, d] = ['First of a pair', 'Second of a pair', 'A third one', 'And a fourth'].map((topic) => engine.tokenize(long(topic)));
  const [coldA, coldB] = await Promise.all([a, b].map((p) => complete(engine, p, { maxTokens: 4, ignoreEos: true })));
  const files = [savedPrefixFile(folder, a, coldA.tokens), savedPrefixFile(folder, b, coldB.tokens)];
  for (const file of files) execFileSync('mkfifo', [`${file}.tmp`]);
  // At once, long before an idle-time save: C and D take both slots.
  await Promise.all([c, d].map((p) => complete(engine, p, { maxTokens: 4, ignoreEos: true })));
  const written = await Promise.all(files.map((file) => drainFifo(`${file}.tmp`, 10_000)));
  t.same(written.map((w) => w.subarray(0, 8).toString()), ['PNSVPC01', 'PNSVPC01'], 'both prefixes were written');
  for (let i = 0; i < 100 && !files.every((f) => existsSync(f)); i++) await sleep(20);
  // Renamed into place, each file is still the FIFO: put what went through it there instead.
  files.forEach((file, i) => {
    rmSync(file, { force: true });
    writeFileSync(file, written[i]);
  });
  const again = await Promise.all([a, b].map((p) => complete(engine, p, { maxTokens: 4, ignoreEos: true })));
  t.same(again.map((r) => r.final.cachedPromptTokens), [a.length - 1, b.length - 1], 'both restored from disk');
  t.same(again.map((r) => r.tokens), [coldA.tokens, coldB.tokens]);
});

t.test('while a request waits for its prefix to be read from disk, the engine serves the others', { skip: process.platform === 'win32' && 'no FIFOs' }, async (t) => {
  // Once the second engine has indexed the saved file, it is swapped for a FIFO, so reading it blocks until
  // the test writes the file's bytes into it. Were the read on the engine thread, nothing would be answered.
  const folder = t.testdir();
  const first = await startEngine(modelPath, settings(folder));
  const prompt = first.tokenize(long('Slow disk'));
  const cold = await complete(first, prompt, { maxTokens: 10, ignoreEos: true });
  await first.close();
  const [file] = savedFiles(folder);
  const bytes = readFileSync(file);

  const second = await startEngine(modelPath, settings(folder));
  t.teardown(() => second.close());
  rmSync(file);
  execFileSync('mkfifo', [file]);
  const waiting = complete(second, prompt, { maxTokens: 10, ignoreEos: true });
  await sleep(200); // admitted, its load blocked on the FIFO
  const other = complete(second, second.tokenize(chat('A short question')), { maxTokens: 4, ignoreEos: true });
  const answered = await Promise.race([other.then(() => true), sleep(10_000).then(() => false)]);
  t.ok(answered, 'another request is answered while the load is blocked');

  await fillFifo(file, bytes, 20_000);
  const warm = await waiting;
  t.equal(warm.final.cachedPromptTokens, prompt.length - 1, 'then served from the loaded prefix');
  t.same(warm.tokens, cold.tokens, 'with the same output as cold');
  rmSync(file, { force: true }); // the FIFO: nothing may read it again
});

t.test('a request cancelled while its prefix is read leaves the slot to others: the late state is dropped', { skip: process.platform === 'win32' && 'no FIFOs' }, async (t) => {
  const folder = t.testdir();
  const first = await startEngine(modelPath, settings(folder));
  const prompt = first.tokenize(long('Cancelled while loading'));
  await complete(first, prompt, { maxTokens: 4, ignoreEos: true });
  await first.close();
  const [file] = savedFiles(folder);
  const bytes = readFileSync(file);

  const second = await startEngine(modelPath, settings(folder, { slots: 1 }));
  t.teardown(() => second.close());
  rmSync(file);
  execFileSync('mkfifo', [file]);
  const controller = new AbortController();
  const cancelled = complete(second, prompt, { maxTokens: 4, ignoreEos: true }, controller.signal);
  await sleep(200); // admitted to the only slot, its load blocked on the FIFO
  controller.abort();
  t.equal((await cancelled).final.stopReason, 'cancelled');

  const other = second.tokenize(long('The slot goes to another request'));
  const before = await complete(second, other, { maxTokens: 8, ignoreEos: true });
  await fillFifo(file, bytes, 20_000); // the load ends now, its request long gone
  rmSync(file, { force: true });
  const again = await complete(second, other, { maxTokens: 8, ignoreEos: true });
  t.equal(again.final.cachedPromptTokens, other.length - 1, 'the slot still holds the other request\'s prefix');
  t.same(again.tokens, before.tokens, 'and gives the same output');
});
