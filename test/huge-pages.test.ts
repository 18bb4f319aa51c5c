// engine.huge_pages: on Linux the model is read into ggml buffers on transparent huge pages (the addon's
// allocator, native/src/huge_pages.cpp) instead of mapping the file. Same output, and the pages are there.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { complete, startEngine } from './helpers/engine.js';
import { tinyModelPath } from './helpers/models.js';

/** The process's anonymous memory on huge pages, in kB (/proc: Linux only). */
function anonHugePagesKb(): number {
  const match = /AnonHugePages:\s+(\d+) kB/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'));
  return match ? Number(match[1]) : 0;
}

/** Whether the kernel gives huge pages to memory that asks for them (the mode is in brackets). */
function thpAvailable(): boolean {
  try {
    return !readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8').includes('[never]');
  } catch {
    return false;
  }
}

const onLinux = process.platform === 'linux';

t.test('huge pages or not, the same tokens and text', { skip: !onLinux && 'huge pages are Linux only' }, async (t) => {
  const path = await tinyModelPath();
  const before = anonHugePagesKb();
  const huge = await startEngine(path, { hugePages: true });
  const during = anonHugePagesKb();
  const prompts = Array.from({ length: 4 }, (_, i) => huge.tokenize(`<|im_start|>user\nitem ${i} ${'and '.repeat(i * 5)}<|im_end|>\n`));
  const params = (i: number) => ({ maxTokens: 24, ignoreEos: true, ...(i === 3 ? { temperature: 0.9, seed: 7 } : {}) });
  const ours = await Promise.all(prompts.map((p, i) => complete(huge, p, params(i))));
  await huge.close();
  const small = await startEngine(path, { hugePages: false });
  const theirs = await Promise.all(prompts.map((p, i) => complete(small, p, params(i))));
  await small.close();
  t.same(ours.map((r) => r.tokens), theirs.map((r) => r.tokens));
  t.same(ours.map((r) => r.text), theirs.map((r) => r.text));
  if (thpAvailable()) {
    // The compute buffer alone (256 tokens x 151,936 logits) is far larger than one 2 MiB page.
    t.ok(during - before >= 2048, `huge pages in use while the engine ran (${before} -> ${during} kB)`);
    t.ok(anonHugePagesKb() <= during - 2048, 'and given back when it closed');
  }
});
