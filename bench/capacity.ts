// What contexts the memory fits, per model shape and machine: the old layout (every slot owns
// context_per_slot cells of f16 KV) against the new one (one pool of cells shared by the slots, of the KV
// type the plan picks). No weights are needed: the models' GGUF headers are written from their published
// configs, read back through the preflight's parsing (src/model/preflight.ts: inspectModel, KV shape and
// sliding-window layers), and planned with src/model/memory-plan.ts against the published Q4_K_M file
// size of each model instead of the header's size.
//
//   npm run bench:capacity
//
// Machines: a CPU with 16, 32 or 64 GiB of RAM (the plan keeps max(2 GiB, RAM / 8) for the system), and a
// 24 GiB and an 80 GiB GPU (an RTX 4090, an A100/H100 80GB) with half a GiB less free (the CUDA context),
// all layers on the GPU. Both layouts get the same memory, so the tables compare the layouts alone.
// Each cell: the longest context one session can reach / how many 32k-token sessions fit at once.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KV_TYPES, type KvType } from '../src/config.js';
import { writeGguf, type GgufValue } from '../src/model/gguf.js';
import {
  gib,
  kvBytesPerToken,
  MIN_POOL_TOKENS,
  planMemory,
  POOL_STEP,
  reserveFor,
  SESSION_TOKENS,
  type KvShape,
  type Machine,
  type MemoryPlan,
  type PlanEngine,
} from '../src/model/memory-plan.js';
import { inspectModel, type ModelFacts } from '../src/model/preflight.js';
import { shapeMetadata, type PublishedShape } from '../src/model/catalogue.js';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const SLOTS = 4;
/** The old default engine.context_per_slot: the old preflight only lowered it to fit. */
const OLD_CONTEXT_PER_SLOT = 32768;

interface Shape extends PublishedShape {
  name: string;
  /** The published Q4_K_M file (decimal bytes, as the Hugging Face listing gives them). */
  file: string;
  fileBytes: number;
  experts?: [count: number, used: number];
}

// From each model's config.json on Hugging Face.
const SHAPES: Shape[] = [
  {
    name: 'Phi-3-mini-128k-instruct',
    arch: 'phi3',
    file: 'second-state Q4_K_M, 2.39 GB',
    fileBytes: 2.39e9,
    layers: 32,
    embd: 3072,
    heads: 32,
    kvHeads: 32,
    context: 131072,
    // In its config (and its GGUF), but llama.cpp's phi3 loader ignores it: every layer is full.
    slidingWindow: 262144,
  },
  { name: 'Qwen3-4B', arch: 'qwen3', file: 'Q4_K_M, 2.50 GB', fileBytes: 2.5e9, layers: 36, embd: 2560, heads: 32, kvHeads: 8, headDim: 128, context: 40960 },
  { name: 'Qwen2.5-Coder-7B-Instruct', arch: 'qwen2', file: 'Q4_K_M, 4.68 GB', fileBytes: 4.68e9, layers: 28, embd: 3584, heads: 28, kvHeads: 4, context: 32768 },
  { name: 'Llama-3.1-8B-Instruct', arch: 'llama', file: 'Q4_K_M, 4.92 GB', fileBytes: 4.92e9, layers: 32, embd: 4096, heads: 32, kvHeads: 8, context: 131072 },
  {
    name: 'Qwen3-Coder-30B-A3B-Instruct (MoE)',
    arch: 'qwen3moe',
    file: 'Q4_K_M, 18.6 GB',
    fileBytes: 18.6e9,
    layers: 48,
    embd: 2048,
    heads: 32,
    kvHeads: 4,
    headDim: 128,
    context: 262144,
    experts: [128, 8],
  },
  {
    name: 'gpt-oss-20b (sliding-window layers)',
    arch: 'gpt-oss',
    file: 'Q4_K_M, 11.6 GB (the experts stay MXFP4)',
    fileBytes: 11.6e9,
    layers: 24,
    embd: 2880,
    heads: 64,
    kvHeads: 8,
    headDim: 64,
    context: 131072,
    // Alternating sliding (128 tokens) and full layers, the first one sliding: llama.cpp's default for gpt-oss.
    slidingWindow: 128,
    experts: [32, 4],
  },
];

const MACHINES: { label: string; machine: Machine }[] = [
  ...[16, 32, 64].map((gb) => ({ label: `CPU, ${gb} GiB`, machine: { memoryBytes: gb * GIB, gpus: [] } })),
  ...[24, 80].map((gb) => ({ label: `GPU, ${gb} GiB`, machine: { memoryBytes: 64 * GIB, gpus: [{ name: `${gb} GiB GPU`, freeBytes: gb * GIB - 512 * MIB }] } })),
];

const u32 = (value: number): GgufValue => ({ type: 'uint32', value });

async function writeHeader(dir: string, s: Shape): Promise<string> {
  const a = s.arch;
  const entries: [string, GgufValue][] = [
    ['general.architecture', { type: 'string', value: a }],
    ['general.name', { type: 'string', value: s.name }],
    [`${a}.block_count`, u32(s.layers)],
    [`${a}.context_length`, u32(s.context)],
    ...shapeMetadata(s),
  ];
  if (s.experts) entries.push([`${a}.expert_count`, u32(s.experts[0])], [`${a}.expert_used_count`, u32(s.experts[1])]);
  const path = join(dir, `${s.name.replace(/[^\w.-]+/g, '_')}.gguf`);
  await writeGguf(path, { metadata: new Map(entries), tensors: [] });
  return path;
}

interface Reach {
  /** Longest context of one session; 0: does not fit. */
  longest: number;
  sessions: number;
  kvType?: KvType;
  /** Under the old preflight's floor of 8192 tokens per slot, which it refused. */
  underFloor?: boolean;
}

/**
 * The old layout on the same memory: f16 KV in the pool that memory holds, cut into `SLOTS` slots of
 * context_per_slot = pool / slots cells (a multiple of 256, at most the old default 32768). Every layer held
 * its slots' cells, sliding-window ones too: the addon left llama.cpp's swa_full at its default, true.
 */
function oldLayout(kv: KvShape, weights: number, machine: Machine): Reach {
  const cpu = machine.gpus.length === 0;
  const memory = cpu ? machine.memoryBytes - reserveFor(machine.memoryBytes) : machine.gpus[0]!.freeBytes;
  const margin = Math.max(512 * MIB, Math.ceil(weights * 0.1));
  const perToken = kvBytesPerToken({ ...kv, layers: kv.layers.map((l) => ({ ...l, swa: false })) }, 'f16');
  const pool = Math.floor((memory - weights - margin) / perToken);
  const perSlot = Math.min(OLD_CONTEXT_PER_SLOT, Math.floor(pool / SLOTS / POOL_STEP) * POOL_STEP);
  if (perSlot <= 0) return { longest: 0, sessions: 0 };
  return { longest: perSlot, sessions: perSlot >= SESSION_TOKENS ? SLOTS : 0, underFloor: perSlot < MIN_POOL_TOKENS };
}

function newLayout(facts: ModelFacts, weights: number, machine: Machine, kvType: KvType | 'auto'): { reach: Reach; plan: MemoryPlan } {
  const engine: PlanEngine = { slots: SLOTS, maxContext: 0, poolTokens: 0, kvType, ubatchSize: 512, flashAttention: 'auto' };
  const plan = planMemory({ model: { ...facts, fileBytes: weights }, engine, gpuLayers: -1, machine });
  const reach = plan.fits ? { longest: plan.maxContext, sessions: plan.sessionsAt32k, kvType: plan.kvType } : { longest: 0, sessions: 0 };
  return { reach, plan };
}

const n = (v: number) => v.toLocaleString('en-US');
const cell = (r: Reach, withType = false) =>
  r.longest === 0 ? 'does not fit' : `${withType && r.kvType ? `${r.kvType}: ` : ''}${n(r.longest)}${r.underFloor ? '*' : ''} / ${r.sessions}`;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pensieve-capacity-'));
  const out: string[] = [];
  let goal: { longest: number; kvType: KvType } | undefined;
  try {
    out.push('# Capacity: the longest context of one session / 32k-token sessions at once', '');
    out.push(
      `${SLOTS} slots, engine.max_context = 0 (the model's trained context), ubatch 512, flash attention auto. Old: ${SLOTS} slots x ` +
        `context_per_slot of f16 KV each, the pool that memory holds cut in ${SLOTS} (at most the old default ${OLD_CONTEXT_PER_SLOT}; *: under ` +
        `${n(MIN_POOL_TOKENS)} per slot, which the old preflight refused). New: one pool ` +
        `shared by the ${SLOTS} slots, sized to the memory up to ${SLOTS} x the trained context. CPU: RAM less max(2 GiB, RAM / 8) for the ` +
        'system; GPU: its free memory (0.5 GiB less than its size), all layers on it. Weights: the published Q4_K_M file; margin ' +
        'max(512 MiB, a tenth of the weights).',
      '',
    );
    for (const shape of SHAPES) {
      const facts = await inspectModel(await writeHeader(dir, shape));
      const perToken = KV_TYPES.map((t) => `${t} ${Math.round(kvBytesPerToken(facts.kv, t) / 1024)} KiB`).join(', ');
      const swaLayers = facts.kv.layers.filter((l) => l.swa).length;
      out.push(`## ${shape.name}`, '');
      out.push(
        `${facts.architecture}, ${facts.layers} layers, ${shape.kvHeads} KV heads of ${facts.kv.layers[0]!.keyLength}, trained for ` +
          `${n(facts.trainedContext ?? 0)} tokens; ${shape.file}. KV per pool cell: ${perToken}` +
          (swaLayers > 0 ? ` (the ${facts.layers - swaLayers} full layers; the ${swaLayers} sliding-window layers hold ${facts.kv.slidingWindow} x ${SLOTS} + 512 cells each).` : '.'),
        '',
      );
      out.push('| Memory | Old (f16, 4 x context_per_slot) | New f16 | New q8_0 | New q4_0 | New auto | Auto: pool, KV |');
      out.push('| --- | --- | --- | --- | --- | --- | --- |');
      for (const { label, machine } of MACHINES) {
        const old = oldLayout(facts.kv, shape.fileBytes, machine);
        const typed = KV_TYPES.map((t) => newLayout(facts, shape.fileBytes, machine, t).reach);
        const auto = newLayout(facts, shape.fileBytes, machine, 'auto');
        const pool = auto.plan.fits ? `${n(auto.plan.poolTokens)} cells, ${gib(auto.plan.kvBytes)}` : '-';
        out.push(`| ${label} | ${cell(old)} | ${typed.map((r) => cell(r)).join(' | ')} | ${cell(auto.reach, true)} | ${pool} |`);
        if (shape.arch === 'phi3' && label === 'CPU, 16 GiB') goal = { longest: auto.reach.longest, kvType: auto.plan.kvType };
      }
      out.push('');
    }
    if (goal) {
      const met = goal.longest >= 100_000;
      out.push(
        `Goal (issue 13): Phi-3-mini-128k (the default model when the goal was set) with the default config on a 16 GiB machine: one session reaches ` +
          `${n(goal.longest)} tokens (${goal.kvType} KV): ${met ? 'yes, at least 100,000' : 'NO, under 100,000'}.`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

await main();
