// A prompt cache folder that the engine cannot clean up (src/engine/prompt-store.ts): an entry that cannot be
// deleted is warned about and left out, and the engine starts and serves, as when a save fails.
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { complete, startEngine } from './helpers/engine.js';
import { tinyModelPath } from './helpers/models.js';
import { modelFingerprint, PromptStore } from '../src/engine/prompt-store.js';

const modelPath = await tinyModelPath();

t.test('folders named like entries (or like an interrupted save) do not stop the engine from starting', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-prompts-'));
  t.teardown(() => rmSync(folder, { recursive: true, force: true }));
  const dir = join(folder, modelFingerprint(modelPath));
  mkdirSync(join(dir, 'entry.kv'), { recursive: true });
  mkdirSync(join(dir, 'save.kv.tmp'));
  const logged: Array<{ level: string; message: string }> = [];
  const engine = await startEngine(modelPath, { slots: 1, promptCache: { folder, maxBytes: 1 << 30 } }, (level, message) => logged.push({ level, message }));
  t.teardown(() => engine.close());
  const served = await complete(engine, engine.tokenize('<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n'), { maxTokens: 4, ignoreEos: true });
  t.equal(served.final.stopReason, 'max_tokens', 'it serves');
  for (const line of [/discarding .*entry\.kv: unreadable header/, /could not delete .*entry\.kv.*EISDIR/, /could not delete .*save\.kv\.tmp.*EISDIR/])
    t.ok(logged.some((l) => l.level === 'warn' && line.test(l.message)), `a warning: ${line}`);
});

t.test('the store leaves out an entry it cannot delete', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-prompts-'));
  t.teardown(() => rmSync(folder, { recursive: true, force: true }));
  mkdirSync(join(folder, 'model', 'entry.kv'), { recursive: true });
  const logged: string[] = [];
  const store = new PromptStore(folder, 'model', 1 << 20, (message) => logged.push(message));
  t.equal(store.size, 0);
  t.match(logged, [/discarding .*entry\.kv/, /could not delete .*entry\.kv/]);
});
