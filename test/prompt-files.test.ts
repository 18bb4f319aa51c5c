// The prompt cache's file thread (src/engine/prompt-files.ts, workers/prompt-files.ts), driven directly with
// KV states from the addon: the order in which it runs its jobs.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { loadAddon } from '../src/native.js';
import { PromptFiles, type FileResult } from '../src/engine/prompt-files.js';
import { prefixFile } from '../src/engine/prompt-store.js';
import { drainFifo } from './helpers/fifo.js';
import { tinyModelPath } from './helpers/models.js';

t.test('a load submitted behind queued saves runs before them', { skip: process.platform === 'win32' && 'no FIFOs' }, async (t) => {
  // Two slots' states in one pool, as the engine would save them.
  const addon = loadAddon();
  const model = new addon.Model(await tinyModelPath(), { gpuLayers: 0 });
  const context = new addon.Context(model, { contextSize: 512, batchSize: 64, ubatchSize: 64, sequences: 2, threads: 1, kvUnified: true });
  t.teardown(() => {
    context.free();
    model.free();
  });
  const held = [0, 1].map((slot) => Int32Array.from({ length: 40 }, (_, i) => 1000 + slot * 100 + i));
  for (const [slot, tokens] of held.entries()) {
    const at = Int32Array.of(tokens.length - 1);
    t.equal(context.decode(tokens, Int32Array.from(tokens, (_, i) => i), new Int32Array(tokens.length).fill(slot), tokens.length, at, 1), 0);
    context.sample(new Int32Array(1));
  }
  const states = [0, 1].map((slot) => context.seqStateGet(slot));

  // The first save's temporary file is a FIFO: the thread blocks on it until the test reads it, so the second
  // save and the load are both waiting by then (or all three are, if the thread had not started yet).
  const dir = t.testdir();
  const fifo = `${prefixFile(dir, held[0])}.tmp`;
  execFileSync('mkfifo', [fifo]);
  const files = new PromptFiles(dir, new SharedArrayBuffer(4));
  t.teardown(() => files.close());
  files.submit({ kind: 'save', tokens: held[0], state: states[0] });
  files.submit({ kind: 'save', tokens: held[1], state: states[1] });
  files.submit({ kind: 'load', id: 7, file: join(dir, 'missing.kv'), tokens: 40 });
  t.ok((await drainFifo(fifo, 20_000)).length > 0, 'the first save was written');

  const results: FileResult[] = files.finish();
  const kinds = results.map((r) => r.kind);
  t.equal(kinds.length, 3);
  t.ok(kinds.indexOf('load') < kinds.lastIndexOf('save'), `the load ran before the save queued ahead of it (${kinds.join(', ')})`);
  t.notOk(results.some((r) => r.kind === 'save' && 'error' in r), 'both saves succeeded');
  t.ok(results.some((r) => r.kind === 'load' && 'error' in r), 'and the load of a missing file failed, as it should');
});
