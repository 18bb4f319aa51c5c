// KV cache types (engine.kv_type): what f16, q8_0 and q4_0 keys and values save in memory, and cost in speed
// and in output quality, on the shared random-weight models. One run, three Markdown tables:
//
//   npm run bench:kv-types -- [--models A.gguf,B.gguf] [--speed-model PATH] [--threads N] [--pool N]
//                             [--ctx N] [--chunks N] [--prefill N] [--gen N] [--parallel 1,4] [--repeats N]
//                             [--parts memory,speed,quality]
//
// 1. Memory: KV bytes per token as llama.cpp allocates them (ggml_row_size of the type for the K and V rows of
//    KV heads x head size, times layers; the shapes read from the GGUF), and for a pool of --pool cells, checked
//    against the `llama_kv_cache: size = ... MiB` line llama.cpp logs when it creates a context of that size
//    (llama-batched-bench with -c POOL -kvu).
// 2. Speed: bench/engine.ts per type on --speed-model (the engine against llama-batched-bench, same settings).
// 3. Quality: llama-perplexity with f16 KV saves the base log-probabilities of a long text (--kl-divergence-base),
//    then each quantized type is compared with it (--kl-divergence): mean KL divergence of the next-token
//    distributions and "same top p" (how often the greedy token is the same). The text is generated from a
//    seeded PRNG over a fixed word list, so every run scores the same tokens.
// Flash attention is on everywhere (llama.cpp needs it for quantized V), so only the KV type differs.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { KV_TYPES, type KvType } from '../src/config.js';
import { readGgufHeader, type GgufMetadata } from '../src/model/gguf.js';
import { uniformRandom } from '../src/prng.js';
import { buildLlamaTools, llamaSourceDir, repoRoot } from './llama-tools.js';
import { positiveInt } from './options.js';

const MIB = 1024 * 1024;
/** ggml's block layout of each KV type: values per block and bytes per block. */
const BLOCKS: Record<KvType, { values: number; bytes: number }> = {
  f16: { values: 1, bytes: 2 },
  q8_0: { values: 32, bytes: 34 }, // an f16 scale + 32 int8
  q4_0: { values: 32, bytes: 18 }, // an f16 scale + 32 4-bit values
};
const workDir = join(repoRoot, 'bench', '.work', 'kv-types');
const log = (line: string): void => void process.stderr.write(`[kv-types] ${line}\n`);

function parseOptions() {
  const { values } = parseArgs({
    options: {
      models: { type: 'string' },
      'speed-model': { type: 'string' },
      threads: { type: 'string' },
      pool: { type: 'string' },
      ctx: { type: 'string' },
      chunks: { type: 'string' },
      prefill: { type: 'string' },
      gen: { type: 'string' },
      parallel: { type: 'string' },
      repeats: { type: 'string' },
      parts: { type: 'string' },
    },
  });
  const parts = (values.parts ?? 'memory,speed,quality').split(',');
  const unknown = parts.filter((p) => !['memory', 'speed', 'quality'].includes(p));
  if (unknown.length) throw new Error(`--parts takes memory, speed and quality, got "${unknown.join(',')}"`);
  const shared = (file: string): string => resolve(repoRoot, '../shared/models', file);
  const models = values.models?.split(',').map((m) => resolve(m)) ??
    [shared('random-qwen2-tiny-10m-q8_0.gguf'), shared('random-qwen2-small-100m-q8_0.gguf')];
  return {
    models,
    speedModel: values['speed-model'] ? resolve(values['speed-model']) : models[models.length - 1],
    threads: positiveInt('threads', values.threads, Math.min(2, availableParallelism())),
    pool: positiveInt('pool', values.pool, 32768),
    ctx: positiveInt('ctx', values.ctx, 2048),
    chunks: positiveInt('chunks', values.chunks, 8),
    prefill: positiveInt('prefill', values.prefill, 512),
    gen: positiveInt('gen', values.gen, 64),
    parallel: values.parallel ?? '1,4',
    repeats: positiveInt('repeats', values.repeats, 3),
    parts,
  };
}
type Options = ReturnType<typeof parseOptions>;

// ---- running commands ----

const commands: string[] = [];
const short = (arg: string): string => (arg.startsWith('/') ? relative(repoRoot, arg) || '.' : arg);

/** Runs a command (recorded for the report, as `shown` when given) and returns its status and output. */
function run(file: string, args: string[], shown = [file, ...args].map(short).join(' ')): { ok: boolean; out: string } {
  commands.push(shown);
  const r = spawnSync(file, args, { encoding: 'utf8', maxBuffer: 256 << 20 });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}\n${r.stderr ?? ''}` };
}

/** The line llama.cpp ends with when it refuses, for the tables. */
function failure(out: string): string {
  const lines = out.split('\n').map((l) => l.trim()).filter(Boolean);
  const line = lines.find((l) => /does not divide/.test(l)) ?? lines.find((l) => /error|failed/i.test(l)) ?? lines.at(-1) ?? 'failed';
  return line.replace(/^[\d.]+ [A-Z] /, '').replace(/^\w+: /, '').replace(/\|/g, '/'); // without the time and level
}

const load = (): string => loadavg().map((v) => v.toFixed(2)).join(', ');

// ---- 1. memory ----

interface KvShape {
  layers: number;
  kvHeads: number;
  keyLength: number;
  valueLength: number;
}

function shapeOf(metadata: GgufMetadata): KvShape {
  const num = (key: string): number | undefined => {
    const v = metadata.get(key)?.value;
    return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
  };
  const arch = metadata.get('general.architecture')?.value as string;
  const heads = num(`${arch}.attention.head_count`)!;
  const headDim = num(`${arch}.embedding_length`)! / heads; // llama.cpp's default head size
  return {
    layers: num(`${arch}.block_count`)!,
    kvHeads: num(`${arch}.attention.head_count_kv`) ?? heads,
    keyLength: num(`${arch}.attention.key_length`) ?? headDim,
    valueLength: num(`${arch}.attention.value_length`) ?? headDim,
  };
}

/** ggml_row_size(type, n). */
const rowBytes = (type: KvType, n: number): number => (n / BLOCKS[type].values) * BLOCKS[type].bytes;

const kvBytesPerToken = (s: KvShape, type: KvType): number =>
  s.layers * (rowBytes(type, s.kvHeads * s.keyLength) + rowBytes(type, s.kvHeads * s.valueLength));

/** What llama.cpp reports for a context of `cells` cells of this type: its KV size in MiB, or why it refused. */
function llamaKvMib(bin: string, model: string, type: KvType, cells: number, threads: number): number | string {
  const { ok, out } = run(join(bin, 'llama-batched-bench'), [
    '-m', model, '-t', String(threads), '-fa', 'on', '-ctk', type, '-ctv', type, '-kvu', '-c', String(cells),
    '-npp', '16', '-ntg', '1', '-npl', '1', '-lv', '4', // -lv 4: llama.cpp's info lines, this tool hides them by default
  ]);
  const size = /llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells/.exec(out);
  if (ok && size && Number(size[2]) === cells) return Number(size[1]);
  return ok ? `no \`llama_kv_cache\` line for ${cells} cells` : `refused: ${failure(out)}`;
}

async function memoryTable(bin: string, o: Options): Promise<string[]> {
  const out = [
    `| model | KV type | KV bytes/token | ${o.pool} cells (computed) | ${o.pool} cells (llama.cpp) | vs f16 |`,
    '| --- | --- | ---: | ---: | ---: | ---: |',
  ];
  for (const model of o.models) {
    const shape = shapeOf((await readGgufHeader(model)).metadata);
    log(`memory: ${basename(model)} (${shape.layers} layers, ${shape.kvHeads} KV heads, head size ${shape.keyLength}/${shape.valueLength})`);
    for (const type of KV_TYPES) {
      const perToken = kvBytesPerToken(shape, type);
      const reported = llamaKvMib(bin, model, type, o.pool, o.threads);
      const shown = typeof reported === 'number' ? `${reported.toFixed(2)} MiB` : reported;
      out.push(`| ${basename(model)} | ${type} | ${perToken} | ${((perToken * o.pool) / MIB).toFixed(2)} MiB | ${shown} | ` +
        `${((100 * perToken) / kvBytesPerToken(shape, 'f16')).toFixed(1)}% |`);
    }
  }
  return out;
}

// ---- 2. speed ----

/** bench/engine.ts (or dist/bench/engine.js) run the way this file runs: node, with the same loader flags. */
function engineBench(o: Options, type: KvType): { rows: string[][]; notes: string[]; error?: string } {
  const here = fileURLToPath(import.meta.url);
  const script = join(dirname(here), `engine${here.endsWith('.ts') ? '.ts' : '.js'}`);
  const args = [
    '--model', o.speedModel, '--threads', String(o.threads), '--kv-type', type, '--flash-attention', 'on',
    '--prefill', String(o.prefill), '--gen', String(o.gen), '--parallel', o.parallel, '--repeats', String(o.repeats),
  ];
  const shown = `${here.endsWith('.ts') ? 'npx tsx' : 'node'} ${[script, ...args].map(short).join(' ')}`;
  const { ok, out } = run(process.execPath, [...process.execArgv, script, ...args], shown);
  if (!ok) return { rows: [], notes: [], error: `failed: ${failure(out)}` };
  const lines = out.split('\n');
  // Its table: | metric | llama.cpp | pensieve | ratio (paired) | ratio of medians |
  const rows = lines.filter((l) => /^\| (prefill|decode|aggregate)/.test(l)).map((l) => l.split('|').slice(1, -1).map((c) => c.trim()));
  const notes = lines.filter((l) => /^(WARNING|Sequences that ended early)/.test(l));
  return { rows, notes };
}

function speedTable(o: Options): string[] {
  const out = [
    `| KV type | metric | llama.cpp | pensieve | ratio (paired) |`,
    '| --- | --- | ---: | ---: | ---: |',
  ];
  const notes: string[] = [];
  for (const type of KV_TYPES) {
    log(`speed: ${type} (load average ${load()})`);
    const r = engineBench(o, type);
    if (r.error) out.push(`| ${type} | ${r.error} | | | |`);
    for (const [metric, llama, ours, paired] of r.rows) out.push(`| ${type} | ${metric} | ${llama} | ${ours} | ${paired} |`);
    notes.push(...r.notes.map((n) => `- ${type}: ${n}`));
  }
  return notes.length ? [...out, '', ...notes] : out;
}

// ---- 3. quality ----

const WORDS = (
  'the of and to in is was for on that with as by at from it his an were are which this be has had or her ' +
  'their one its new after but who not they have she two been other when there all first also into time year ' +
  'would more city over some most people only may many these could world state before made then through ' +
  'where school between during film family under water three years while both called life work part team ' +
  'since house music war long game later river small because server model token memory cache engine sequence ' +
  'request window prompt batch thread value key layer head block cell pool slot session context output input'
).split(' ');

/** About `words` words of sentences from a seeded PRNG: the same text on every run. */
function text(words: number): string {
  const next = uniformRandom(13);
  const pick = (): string => WORDS[Math.floor(next() * WORDS.length)];
  const sentences: string[] = [];
  for (let n = 0; n < words; ) {
    const length = 6 + Math.floor(next() * 12);
    const s = Array.from({ length }, pick).join(' ');
    sentences.push(`${s[0].toUpperCase()}${s.slice(1)}${next() < 0.2 ? '?' : '.'}${next() < 0.1 ? '\n\n' : ' '}`);
    n += length;
  }
  return sentences.join('');
}

interface Quality {
  kld?: string;
  kld99?: string;
  sameTop?: string;
  pplRatio?: string;
  error?: string;
}

function perplexity(bin: string, o: Options, model: string, textFile: string, args: string[]): { ok: boolean; out: string } {
  return run(join(bin, 'llama-perplexity'), [
    '-m', model, '-f', textFile, '-c', String(o.ctx), '--chunks', String(o.chunks), '-t', String(o.threads), '-fa', 'on', ...args,
  ]);
}

function qualityOf(bin: string, o: Options, model: string, textFile: string, base: string, type: KvType): Quality {
  const { ok, out } = perplexity(bin, o, model, textFile, ['-ctk', type, '-ctv', type, '--kl-divergence', '--kl-divergence-base', base]);
  const value = (re: RegExp): string | undefined => re.exec(out)?.[1].replace(/\s+/g, ' ');
  const q: Quality = {
    kld: value(/Mean\s+KLD:\s*([-\d.]+\s*±\s*[-\d.]+)/),
    kld99: value(/99\.0%\s+KLD:\s*([-\d.]+)/),
    sameTop: value(/Same top p:\s*([-\d.]+\s*±\s*[-\d.]+ %)/),
    pplRatio: value(/Mean PPL\(Q\)\/PPL\(base\)\s*:\s*([-\d.]+\s*±\s*[-\d.]+)/),
  };
  if (!ok || q.kld === undefined) return { error: ok ? 'no KL divergence statistics in the output' : `refused: ${failure(out)}` };
  return q;
}

function qualityTable(bin: string, o: Options): string[] {
  mkdirSync(workDir, { recursive: true });
  const textFile = join(workDir, 'text.txt');
  // Qwen2's tokenizer makes about 1.1 tokens of these words; 1.5 per token needed leaves room.
  writeFileSync(textFile, text(Math.ceil(o.ctx * o.chunks * 1.5)));
  const out = [
    '| model | KV type | PPL (f16) | mean KLD vs f16 | 99th percentile KLD | same top token | PPL(type)/PPL(f16) |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const model of o.models) {
    const base = join(workDir, `${basename(model, '.gguf')}-f16.kld`);
    log(`quality: ${basename(model)}, f16 base (load average ${load()})`);
    const b = perplexity(bin, o, model, textFile, ['-ctk', 'f16', '-ctv', 'f16', '--kl-divergence-base', base]);
    if (!b.ok) throw new Error(`llama-perplexity (f16 base) failed:\n${b.out.slice(-3000)}`);
    const chunks = /calculating perplexity over (\d+) chunks/.exec(b.out)?.[1];
    const ppl = /Final estimate: PPL = ([\d.]+)/.exec(b.out)?.[1] ?? '?';
    if (Number(chunks) !== o.chunks) log(`WARNING: the text gave ${chunks} chunks, not ${o.chunks}`);
    for (const type of KV_TYPES.filter((t) => t !== 'f16')) {
      log(`quality: ${basename(model)}, ${type}`);
      const q = qualityOf(bin, o, model, textFile, base, type);
      out.push(q.error
        ? `| ${basename(model)} | ${type} | ${ppl} | ${q.error} | | | |`
        : `| ${basename(model)} | ${type} | ${ppl} | ${q.kld} | ${q.kld99} | ${q.sameTop} | ${q.pplRatio} |`);
    }
    rmSync(base, { force: true }); // n_vocab log-probabilities per scored token: hundreds of MB
  }
  return [...out, '', `Text: ${o.chunks} chunks of ${o.ctx} tokens (KLD over the second half of each chunk, as llama-perplexity scores).`];
}

// ---- report ----

async function main(): Promise<void> {
  const o = parseOptions();
  const bin = buildLlamaTools(['llama-batched-bench', 'llama-perplexity']);
  const rev = spawnSync('git', ['-C', llamaSourceDir, 'log', '-1', '--format=%h'], { encoding: 'utf8' }).stdout.trim();
  const loads = [`start: ${load()}`];
  const report: string[] = [
    `date: ${new Date().toISOString().slice(0, 10)}; llama.cpp ${rev || 'unknown'}; ${availableParallelism()} cores, ` +
      `threads ${o.threads}; flash attention on`,
  ];
  if (o.parts.includes('memory')) {
    report.push('', '### Memory', '', ...(await memoryTable(bin, o)));
    loads.push(`after memory: ${load()}`);
  }
  if (o.parts.includes('speed')) {
    report.push('', `### Speed (${basename(o.speedModel)}, bench/engine.ts)`, '', ...speedTable(o));
    loads.push(`after speed: ${load()}`);
  }
  if (o.parts.includes('quality')) {
    report.push('', '### Quality vs f16 (llama-perplexity --kl-divergence)', '', ...qualityTable(bin, o));
    loads.push(`after quality: ${load()}`);
  }
  report.push('', `Load average (1, 5, 15 min) of this shared machine: ${loads.join('; ')}.`);
  report.push('', 'Commands:', '', '```sh', ...commands, '```');
  console.log(report.join('\n'));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
