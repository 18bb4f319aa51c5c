// Engine benchmark: Pensieve's engine against llama.cpp's own llama-batched-bench, same model, same llama.cpp
// source, same threads, same context/batch sizes, same KV layout (one pool of cells shared by all sequences).
//
//   npm run bench:engine -- [--model PATH] [--threads N] [--prefill N] [--gen N] [--parallel 1,2,4,8,16] [--repeats N]
//                           [--flash-attention off|on|auto] [--kv-type f16|q8_0|q4_0] [--gpu-layers N] [--huge-pages on|off]
//
// --huge-pages is the engine's engine.huge_pages (default on, as in config/pensieve.toml; Linux only): the
// model read into memory on transparent huge pages. llama-batched-bench keeps its default (the model file
// mapped, small pages); --huge-pages off gives the engine the same memory, for its overhead alone.
//
// GPU: build the addon with PENSIEVE_GPU=cuda and run this with the same variable and --gpu-layers N (e.g. 99,
// every layer); llama-batched-bench is then built with CUDA too and gets -ngl N.
//
// The two sides run alternately, never at once, level by level, in the order llama.cpp, Pensieve on even
// repeats and Pensieve, llama.cpp on odd ones, so that a slow drift of this shared machine's speed favours
// neither side; each side is warmed up once. Every figure is the median of the repeats; each ratio is the
// median of the repeats' paired ratios (Pensieve over the llama.cpp run beside it), which cancels the drift
// between repeats (the ratio of the two medians is printed too). Output is Markdown, for bench/RESULTS.md.
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine } from '../src/engine/engine.js';
import type { FinalStats } from '../src/engine/types.js';
import { uniformRandom } from '../src/prng.js';
import { buildLlamaTools, llamaSourceDir, repoRoot } from './llama-tools.js';
import { median, nonNegativeInt, positiveInt } from './options.js';
import { KV_TYPES, type KvType } from '../src/config.js';

const BATCH = 512; // -b and -ub for llama.cpp; batchSize, ubatchSize and stepTokenBudget for Pensieve
const TARGETS = { singleDecode: 0.97, aggregateAt8: 1.0 };

interface Options {
  model: string;
  threads: number;
  prefill: number;
  gen: number;
  parallel: number[];
  repeats: number;
  /** Both sides run with the same setting (the engine's default is auto). */
  flashAttention: 'off' | 'on' | 'auto';
  /** KV cache type of keys and values, both sides. */
  kvType: KvType;
  /** Layers offloaded to the GPU on both sides (0: CPU only). */
  gpuLayers: number;
  /** The engine's huge_pages setting (llama-batched-bench always maps the model file). */
  hugePages: boolean;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' },
      threads: { type: 'string' },
      prefill: { type: 'string' },
      gen: { type: 'string' },
      parallel: { type: 'string' },
      repeats: { type: 'string' },
      'flash-attention': { type: 'string' },
      'kv-type': { type: 'string' },
      'gpu-layers': { type: 'string' },
      'huge-pages': { type: 'string' },
    },
  });
  const flashAttention = values['flash-attention'] ?? 'auto';
  if (flashAttention !== 'off' && flashAttention !== 'on' && flashAttention !== 'auto') {
    throw new Error(`--flash-attention must be off, on or auto, got "${flashAttention}"`);
  }
  const kvType = (values['kv-type'] ?? 'f16') as KvType;
  if (!KV_TYPES.includes(kvType)) throw new Error(`--kv-type must be one of ${KV_TYPES.join(', ')}, got "${kvType}"`);
  const hugePages = values['huge-pages'] ?? 'on';
  if (hugePages !== 'on' && hugePages !== 'off') throw new Error(`--huge-pages must be on or off, got "${hugePages}"`);
  const model = values.model ? resolve(values.model) : resolve(repoRoot, '../shared/models/random-qwen2-small-100m-q8_0.gguf');
  if (!existsSync(model)) {
    throw new Error(`model not found: ${model}\n(pass --model PATH; the default is ../shared/models/random-qwen2-small-100m-q8_0.gguf next to the repository)`);
  }
  const parallel = (values.parallel ?? '1,2,4,8,16').split(',').map((s) => positiveInt('parallel', s.trim(), 1));
  if (!parallel.includes(1)) parallel.unshift(1); // the single-stream figures come from the level-1 run
  return {
    model,
    threads: positiveInt('threads', values.threads, availableParallelism()),
    prefill: positiveInt('prefill', values.prefill, 512),
    gen: positiveInt('gen', values.gen, 128),
    flashAttention,
    kvType,
    parallel: [...new Set(parallel)].sort((a, b) => a - b),
    repeats: positiveInt('repeats', values.repeats, 5),
    gpuLayers: nonNegativeInt('gpu-layers', values['gpu-layers'], 0),
    hugePages: hugePages === 'on',
  };
}

/** A reported figure: each side's median over the repeats, and the median of the repeats' ratios. */
interface Row {
  name: string;
  llama: number;
  ours: number;
  paired: number;
}

/** One side's figures at one parallel level, in tokens per second (prefill and decode: 1 sequence only). */
interface Level {
  prefill: number;
  decode: number;
  aggregate: number;
}

/**
 * KV cells per sequence on both sides: prompt + generation, rounded up to llama.cpp's 256-cell KV padding.
 * The engine's slots get exactly this (llama.cpp rounds a slot's cells up to it anyway), and so does each of
 * batched-bench's streams, so that both attend over the same number of cells at every step.
 */
function cellsPerSequence(o: Options): number {
  return Math.ceil((o.prefill + o.gen) / 256) * 256;
}

// ---- llama.cpp side ----

function llamaArgs(o: Options, parallel: number, gen: number): string[] {
  return [
    '-m', o.model, '-t', String(o.threads), '-tb', String(o.threads), '-fa', o.flashAttention, '-ngl', String(o.gpuLayers),
    '-ctk', o.kvType, '-ctv', o.kvType,
    // -kvu: one pool of cells for all sequences, as the engine's (native/src/context.cpp).
    '-kvu', '-c', String(parallel * cellsPerSequence(o)), '-b', String(BATCH), '-ub', String(BATCH),
    '-npp', String(o.prefill), '-ntg', String(gen), '-npl', String(parallel),
    '--output-format', 'jsonl',
  ];
}

function runLlama(bin: string, o: Options, parallel: number, gen = o.gen): Level {
  const result = spawnSync(join(bin, 'llama-batched-bench'), llamaArgs(o, parallel, gen), { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (result.status !== 0) {
    throw new Error(`llama-batched-bench failed (status ${result.status}):\n${(result.stderr ?? '').slice(-3000)}`);
  }
  const row = `${result.stdout}\n${result.stderr}`.split('\n').find((line) => line.startsWith('{'));
  if (!row) throw new Error(`llama-batched-bench printed no result:\n${result.stdout}`);
  const { speed_pp: prefill, speed_tg: decode } = JSON.parse(row) as { speed_pp: number; speed_tg: number };
  return { prefill, decode, aggregate: decode };
}

// ---- Pensieve side ----

interface SequenceRun {
  /** Arrival time (ms, performance.now) of each generated token on this thread. */
  times: number[];
  final: FinalStats;
}

// Ids in the middle of the vocabulary: ordinary BPE pieces, far from the special/end-of-generation tokens.
function randomPrompt(next: () => number, length: number, vocabSize: number): Int32Array {
  const lo = 1000;
  const hi = Math.min(30000, vocabSize);
  return Int32Array.from({ length }, () => lo + Math.floor(next() * (hi - lo)));
}

/** Runs the prompts as concurrent generations (submitted together) and times every token's arrival. */
function runSequences(engine: Engine, prompts: Int32Array[], gen: number): Promise<SequenceRun[]> {
  return Promise.all(
    prompts.map(async (prompt) => {
      const times: number[] = [];
      let final: FinalStats | undefined;
      for await (const ev of engine.generate(prompt, { maxTokens: gen, temperature: 0 })) {
        if (ev.type === 'final') final = ev;
        else if (ev.type === 'text' && ev.token >= 0) times.push(performance.now()); // token -1: text flushed at the end, no token
      }
      return { times, final: final! };
    }),
  );
}

/**
 * Aggregate decode rate the way batched-bench's S_TG counts it: tokens generated while ALL sequences are
 * decoding, over that phase's duration. Our prompts are prefilled in turn (one 512-token chunk per step)
 * while earlier sequences already decode, so the phase runs from the last sequence's first token to the
 * first sequence's last token; tokens that arrived inside it are counted.
 */
function allDecodingRate(runs: SequenceRun[]): number {
  const start = Math.max(...runs.map((r) => r.times[0]));
  const end = Math.min(...runs.map((r) => r.times[r.times.length - 1]));
  if (!(end > start)) return NaN;
  let tokens = 0;
  for (const r of runs) for (const t of r.times) if (t > start && t <= end) tokens++;
  return tokens / ((end - start) / 1000);
}

class PensieveSide {
  readonly earlyEnds: string[] = [];
  /** Prompt tokens the engine served from its prefix cache; should stay 0, since every prompt is new. */
  cachedTokens = 0;
  private readonly next = uniformRandom(42);

  private constructor(private readonly engine: Engine, private readonly o: Options) {}

  static async start(o: Options): Promise<PensieveSide> {
    const slots = Math.max(...o.parallel);
    const engine = await Engine.start({
      modelPath: o.model, gpuLayers: o.gpuLayers, slots, maxContext: cellsPerSequence(o), poolTokens: slots * cellsPerSequence(o),
      kvType: o.kvType, stepTokenBudget: BATCH,
      batchSize: BATCH, ubatchSize: BATCH, threads: o.threads, queueLength: slots, ringRecords: 256, streamIntervalMs: 20,
      flashAttention: o.flashAttention, hugePages: o.hugePages,
    });
    return new PensieveSide(engine, o);
  }

  /**
   * Every run gets new random prompts: the engine keeps each slot's last prompt as a reusable prefix, so
   * a repeated prompt would skip its prefill (and batched-bench never reuses one either).
   */
  private run(parallel: number): Promise<SequenceRun[]> {
    const prompts = Array.from({ length: parallel }, () => randomPrompt(this.next, this.o.prefill, this.engine.model.vocabSize));
    return runSequences(this.engine, prompts, this.o.gen);
  }

  async warmUp(): Promise<void> {
    await this.run(Math.max(...this.o.parallel));
  }

  async measure(parallel: number): Promise<Level> {
    const runs = await this.run(parallel);
    runs.forEach((r, i) => {
      this.cachedTokens += r.final.cachedPromptTokens;
      // A random model may emit an end-of-generation token early; such a run is reported, not hidden.
      if (r.final.generatedTokens !== this.o.gen) {
        this.earlyEnds.push(`${parallel} seqs, seq ${i}: ${r.final.generatedTokens}/${this.o.gen} tokens (${r.final.stopReason})`);
      }
    });
    const f = runs[0].final;
    return {
      prefill: f.promptTokens / (f.prefillMs / 1000),
      decode: (f.generatedTokens - 1) / (f.decodeMs / 1000),
      aggregate: allDecodingRate(runs),
    };
  }

  close(): Promise<void> {
    return this.engine.close();
  }
}

// ---- other load on the machine ----

/** CPU time (in clock ticks) used by the whole machine, and by this process with its finished children. */
function cpuTicks(): { machine: number; ours: number } {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  const idle = fields[3] + fields[4]; // idle + iowait
  // /proc/self/stat: fields 14-17 are utime, stime, cutime, cstime (after the parenthesized name).
  const own = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ').slice(11, 15).map(Number);
  return { machine: fields.slice(0, 8).reduce((a, b) => a + b, 0) - idle, ours: own.reduce((a, b) => a + b, 0) };
}

/**
 * Runs a measurement and checks how many cores other processes kept busy meanwhile: on 2 cores even a
 * short burst of outside load stalls the compute threads at every barrier, so such measurements are redone.
 * Load that fits on the cores left idle by our `threads` compute threads (keeping one for the process's
 * other threads) disturbs nothing.
 */
async function undisturbed<T>(what: string, threads: number, measure: () => T | Promise<T>): Promise<T> {
  const ticksPerSecond = 100; // USER_HZ on Linux
  const maxOtherLoad = 0.05 + Math.max(0, availableParallelism() - threads - 1); // cores, averaged over the measurement
  for (let attempt = 1; ; attempt++) {
    const before = cpuTicks();
    const t0 = performance.now();
    const result = await measure();
    const after = cpuTicks();
    const others = ((after.machine - before.machine) - (after.ours - before.ours)) / ticksPerSecond / ((performance.now() - t0) / 1000);
    if (others < maxOtherLoad || attempt === 5) {
      if (others >= maxOtherLoad) disturbed.push(`${what}: other processes used ${others.toFixed(2)} cores`);
      return result;
    }
    log(`${what}: other processes used ${others.toFixed(2)} cores meanwhile; waiting 20 s and measuring again`);
    await new Promise((r) => setTimeout(r, 20_000));
  }
}

const disturbed: string[] = [];
const log = (line: string): void => void process.stderr.write(`[bench] ${line}\n`);

// ---- report ----


const fmt = (v: number): string => (Number.isNaN(v) ? 'n/a' : v.toFixed(1));

/** The GPU's name as nvidia-smi gives it, when there is one. */
function gpuName(): string | undefined {
  try {
    return execFileSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader'], { encoding: 'utf8' }).trim().split('\n')[0];
  } catch {
    return undefined; // no NVIDIA driver here
  }
}

function machine(o: Options): string {
  const cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
  const source = readFileSync(join(llamaSourceDir, '.pensieve-source'), 'utf8').trim();
  // The source is a git clone of the bundle; a copy without .git (e.g. one carried elsewhere) has no revision.
  const rev = existsSync(join(llamaSourceDir, '.git'))
    ? execFileSync('git', ['-C', llamaSourceDir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()
    : 'unknown';
  const gpu = o.gpuLayers > 0 ? `; GPU: ${gpuName() ?? 'none found'}` : '';
  return `${availableParallelism()} cores, ${cpu}${gpu}; llama.cpp from ${source} (${rev})`;
}

async function main(): Promise<void> {
  const o = parseOptions();
  const bin = buildLlamaTools(['llama-batched-bench']);

  log('warming up llama.cpp');
  runLlama(bin, o, Math.max(...o.parallel), Math.min(o.gen, 16));
  log('starting the Pensieve engine and warming it up');
  const pensieve = await PensieveSide.start(o);
  await pensieve.warmUp();

  // runs[side][level index][repeat]
  const runs = { llama: o.parallel.map((): Level[] => []), ours: o.parallel.map((): Level[] => []) };
  try {
    for (let r = 0; r < o.repeats; r++) {
      for (const [i, n] of o.parallel.entries()) {
        const what = `${n} seq${n > 1 ? 's' : ''}, repeat ${r + 1}/${o.repeats}`;
        log(what);
        const llama = (): Promise<Level> => undisturbed(`llama.cpp, ${what}`, o.threads, () => runLlama(bin, o, n));
        const ours = (): Promise<Level> => undisturbed(`pensieve, ${what}`, o.threads, () => pensieve.measure(n));
        if (r % 2 === 0) {
          runs.llama[i].push(await llama());
          runs.ours[i].push(await ours());
        } else {
          runs.ours[i].push(await ours());
          runs.llama[i].push(await llama());
        }
      }
    }
  } finally {
    await pensieve.close();
  }
  const one = o.parallel.indexOf(1);
  const row = (name: string, i: number, key: keyof Level): Row => {
    const llama = runs.llama[i].map((l) => l[key]);
    const ours = runs.ours[i].map((l) => l[key]);
    return { name, llama: median(llama), ours: median(ours), paired: median(ours.map((v, r) => v / llama[r])) };
  };
  const rows: Row[] = [
    row(`prefill tok/s (1 seq, ${o.prefill}-token prompt)`, one, 'prefill'),
    row('decode tok/s (1 seq)', one, 'decode'),
    ...o.parallel.map((n, i) => row(`aggregate decode tok/s, ${n} seq${n > 1 ? 's' : ''}`, i, 'aggregate')),
  ];
  const out: string[] = [];
  out.push(`model: ${o.model}`);
  out.push(`threads: ${o.threads}; prompt ${o.prefill} tokens; ${o.gen} generated tokens per sequence; batch/ubatch ${BATCH}; flash attention ${o.flashAttention}; KV ${o.kvType}; gpu layers ${o.gpuLayers}; ` +
    `pensieve huge pages ${o.hugePages ? 'on' : 'off'} (llama.cpp: model file mapped); ` +
    `KV: one stream per sequence, ${Math.max(...o.parallel)} x ${cellsPerSequence(o)} cells; median of ${o.repeats}`);
  out.push(`machine: ${machine(o)}`);
  out.push('');
  out.push('| metric | llama.cpp | pensieve | ratio (paired) | ratio of medians |');
  out.push('| --- | ---: | ---: | ---: | ---: |');
  for (const r of rows) out.push(`| ${r.name} | ${fmt(r.llama)} | ${fmt(r.ours)} | ${r.paired.toFixed(3)} | ${(r.ours / r.llama).toFixed(3)} |`);
  out.push('');
  const check = (name: string, value: number, target: number): string =>
    `- ${name}: ${Number.isNaN(value) ? 'n/a' : value.toFixed(3)} (target >= ${target}) ${value >= target ? 'PASS' : 'FAIL'}`;
  out.push(check('single-stream decode ratio (paired)', rows[1].paired, TARGETS.singleDecode));
  if (o.parallel.includes(8)) {
    out.push(check('aggregate decode ratio at 8 sequences (paired)', rows[2 + o.parallel.indexOf(8)].paired, TARGETS.aggregateAt8));
  }
  out.push('');
  out.push('Definitions. llama.cpp: llama-batched-bench S_PP and S_TG (S_TG = sequences x generated tokens / time of the ' +
    'decode phase, which starts after all prompts are prefilled). Pensieve: prefill = prompt tokens / final.prefillMs ' +
    '(admission to first token); decode = (generated - 1) / final.decodeMs; aggregate = tokens that arrive while all ' +
    'N sequences are decoding (after the last first token, up to the first last token) / that window\'s duration.');
  if (disturbed.length > 0) out.push('', `WARNING, measured while the machine was busy: ${disturbed.join('; ')}`);
  if (pensieve.cachedTokens > 0) out.push('', `WARNING: the engine served ${pensieve.cachedTokens} prompt tokens from its prefix cache.`);
  if (pensieve.earlyEnds.length > 0) out.push('', `Sequences that ended early: ${pensieve.earlyEnds.join('; ')}`);
  out.push('', 'Every repeat, llama.cpp | pensieve, in order (1 seq: prefill/decode; N seqs: aggregate decode; ' +
    'odd repeats ran Pensieve first):');
  for (const [i, n] of o.parallel.entries()) {
    const list = (side: Level[]): string => side.map((l) => (n === 1 ? `${fmt(l.prefill)}/${fmt(l.decode)}` : fmt(l.aggregate))).join(', ');
    out.push(`- ${n} seq${n > 1 ? 's' : ''}: ${list(runs.llama[i])} | ${list(runs.ours[i])}`);
  }
  console.log(out.join('\n'));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
