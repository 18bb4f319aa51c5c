// The KV layout decision (issue 13): one pool of cells shared by all sequences (llama.cpp's unified KV
// cache, the engine's layout) against one stream per sequence (the engine's earlier layout), with flash
// attention off and on. For each, on the same model and prompts:
//  - agreement: 8 greedy sequences generated alone and then together in one batch; how many generated
//    the same tokens, and the mean share of tokens before the first difference;
//  - speed: the batch's decode rate, and the same with the pool 4x fuller of other sequences' cells (idle
//    cached prefixes, as the engine keeps them), which the pool's attention has to skip.
// Drives the addon's Context directly, as the engine thread does (one llama_decode per step, greedy inside
// the graph), so that only the layout and flash attention differ.
//
//   npm run bench:kv-layout -- [--model PATH] [--threads N] [--prompt N] [--gen N]
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadAddon, type NativeContext, type NativeModel } from '../src/native.js';
import { uniformRandom } from '../src/prng.js';
import { repoRoot } from './llama-tools.js';
import { positiveInt } from './options.js';

const SEQUENCES = 8;
const BATCH = 512;

interface Options {
  model: string;
  threads: number;
  prompt: number;
  gen: number;
}

function parseOptions(): Options {
  const { values } = parseArgs({ options: { model: { type: 'string' }, threads: { type: 'string' }, prompt: { type: 'string' }, gen: { type: 'string' } } });
  const model = resolve(values.model ?? resolve(repoRoot, '../shared/models/random-qwen2-small-100m-q8_0.gguf'));
  if (!existsSync(model)) throw new Error(`model not found: ${model} (pass --model PATH)`);
  return {
    model,
    threads: positiveInt('threads', values.threads, availableParallelism()),
    prompt: positiveInt('prompt', values.prompt, 256),
    gen: positiveInt('gen', values.gen, 64),
  };
}

interface Layout {
  name: string;
  kvUnified: boolean;
  flashAttention: 0 | 1;
}

const LAYOUTS: Layout[] = [
  { name: 'one stream per sequence, flash attention off', kvUnified: false, flashAttention: 0 },
  { name: 'one stream per sequence, flash attention on', kvUnified: false, flashAttention: 1 },
  { name: 'pool, flash attention off', kvUnified: true, flashAttention: 0 },
  { name: 'pool, flash attention on (the default)', kvUnified: true, flashAttention: 1 },
];

/** One step's batch, built the way the engine thread builds it. */
class Batch {
  readonly tokens = new Int32Array(BATCH);
  readonly positions = new Int32Array(BATCH);
  readonly seqIds = new Int32Array(BATCH);
  readonly sampleAt = new Int32Array(SEQUENCES);
  readonly sampled = new Int32Array(SEQUENCES);
  n = 0;
  nSample = 0;

  add(token: number, position: number, seq: number, sample: boolean): void {
    if (sample) this.sampleAt[this.nSample++] = this.n;
    this.tokens[this.n] = token;
    this.positions[this.n] = position;
    this.seqIds[this.n++] = seq;
  }

  run(context: NativeContext): Int32Array {
    if (context.decode(this.tokens, this.positions, this.seqIds, this.n, this.sampleAt, this.nSample) !== 0) throw new Error('decode failed');
    if (this.nSample > 0 && context.sample(this.sampled) !== 0) throw new Error('sample failed');
    const out = this.sampled.slice(0, this.nSample);
    this.n = this.nSample = 0;
    return out;
  }
}

/**
 * Greedy generation for the given sequences together, as the engine runs them: the prompts' tokens fill
 * steps of up to BATCH tokens (several prompts in one step), then one decode step for all at a time.
 * Returns each one's tokens and the decode rate (tokens/s over the decode steps).
 */
function generate(context: NativeContext, prompts: Int32Array[], seqs: number[], gen: number): { tokens: number[][]; rate: number } {
  const batch = new Batch();
  const last: number[] = new Array(seqs.length);
  const sampledBy: number[] = [];
  for (const [i, seq] of seqs.entries()) {
    for (const [p, token] of prompts[i].entries()) {
      const final = p === prompts[i].length - 1;
      batch.add(token, p, seq, final);
      if (final) sampledBy.push(i);
      if (batch.n === BATCH) for (const token of batch.run(context)) last[sampledBy.shift()!] = token;
    }
  }
  if (batch.n > 0) for (const token of batch.run(context)) last[sampledBy.shift()!] = token;
  const tokens = last.map((t) => [t]);
  const started = performance.now();
  for (let step = 1; step < gen; step++) {
    for (const [i, seq] of seqs.entries()) batch.add(tokens[i].at(-1)!, prompts[i].length + step - 1, seq, true);
    const out = batch.run(context);
    for (let i = 0; i < seqs.length; i++) tokens[i].push(out[i]);
  }
  return { tokens, rate: (seqs.length * (gen - 1)) / ((performance.now() - started) / 1000) };
}

function clearAll(context: NativeContext): void {
  for (let seq = 0; seq < SEQUENCES; seq++) context.seqRemove(seq, -1, -1);
}

/** Tokens before the first difference, over the length. */
function sharedShare(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return i / a.length;
}

function measure(model: NativeModel, o: Options, layout: Layout, prompts: Int32Array[]) {
  const cells = Math.ceil((o.prompt + o.gen) / 256) * 256;
  // Room for the 8 sequences, and in the pool for 8 more sequences' idle prefixes, 3 times as long.
  const context = new (loadAddon().Context)(model, {
    contextSize: SEQUENCES * cells * (layout.kvUnified ? 4 : 1), batchSize: BATCH, ubatchSize: BATCH,
    sequences: SEQUENCES * (layout.kvUnified ? 2 : 1), threads: o.threads, kvUnified: layout.kvUnified, flashAttention: layout.flashAttention,
  });
  try {
    const seqs = Array.from({ length: SEQUENCES }, (_, i) => i);
    for (const seq of seqs) context.configureSampler(seq, { temperature: 0, topP: 1, topK: 0, seed: 0 });
    const alone = seqs.map((seq) => {
      clearAll(context);
      return generate(context, [prompts[seq]], [seq], o.gen).tokens[0];
    });
    clearAll(context);
    const together = generate(context, prompts, seqs, o.gen);
    const same = seqs.filter((i) => together.tokens[i].every((t, k) => t === alone[i][k])).length;
    const share = seqs.reduce((n, i) => n + sharedShare(alone[i], together.tokens[i]), 0) / SEQUENCES;
    let fuller = NaN;
    if (layout.kvUnified) {
      // Idle prefixes in the pool's lower cells (as the engine keeps cached prefixes), the batch above them.
      clearAll(context);
      const idle = seqs.map((seq) => SEQUENCES + seq);
      generate(context, prompts.map((p) => Int32Array.from([...p, ...p, ...p])), idle, 1);
      fuller = generate(context, prompts, seqs, o.gen).rate;
    }
    return { same, share, rate: together.rate, fuller };
  } finally {
    context.free();
  }
}

function main(): void {
  const o = parseOptions();
  const model = new (loadAddon().Model)(o.model, { gpuLayers: 0 });
  const next = uniformRandom(7);
  const prompts = Array.from({ length: SEQUENCES }, () => Int32Array.from({ length: o.prompt }, () => 1000 + Math.floor(next() * 29000)));
  const rows = LAYOUTS.map((layout) => ({ layout, ...measure(model, o, layout, prompts) }));
  model.free();
  console.log(`model ${o.model}; ${SEQUENCES} greedy sequences of ${o.prompt} prompt + ${o.gen} generated tokens; threads ${o.threads}\n`);
  console.log('| layout | same tokens alone and batched | tokens before the first difference | batched decode tok/s | with 3x more idle cells in the pool |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    console.log(`| ${r.layout.name} | ${r.same}/${SEQUENCES} | ${(100 * r.share).toFixed(0)}% | ${r.rate.toFixed(1)} | ${Number.isNaN(r.fuller) ? '-' : r.fuller.toFixed(1)} |`);
  }
}

main();
