// The catalogue: models chosen for Claude Code, by machine size, with short names (aliases) for
// `pensieve pull` and --model, like Ollama's library names. Each entry carries the published shape of its
// model (from its config.json), so that `pensieve models --available` can plan its memory
// (src/model/memory-plan.ts) on each machine size, and on this machine, without downloading it.
//
// Every entry has a tool-call format that llama.cpp's common chat layer parses (its family), grouped-query
// attention and a trained context of at least 128k tokens. test/families.test.ts runs a random-weight model
// of each family (its tokenizer and chat template) through the API.
import type { GgufMetadata, GgufValue } from './gguf.js';
import { planMemory, type Machine, type MemoryPlan, type PlanEngine } from './memory-plan.js';
import { kvShape } from './preflight.js';

/** How a family's chat template frames tool calls and reasoning (what llama.cpp's chat layer parses). */
export type ModelFamily = 'qwen3' | 'qwen3-coder' | 'llama3' | 'gpt-oss' | 'devstral';

export const FAMILY_FORMATS: Readonly<Record<ModelFamily, string>> = {
  qwen3: 'Hermes-style <tool_call> JSON; <think> reasoning in the hybrid Qwen3 models',
  'qwen3-coder': 'XML tool calls (<tool_call><function=...><parameter=...>)',
  llama3: 'Llama 3.1 JSON tool calls ({"name": ..., "parameters": ...})',
  'gpt-oss': 'harmony: tool calls on the commentary channel, reasoning on the analysis channel',
  devstral: 'Mistral [TOOL_CALLS]name[ARGS]{...}',
};

/** The machine sizes the catalogue recommends for. */
export const MACHINE_CLASSES = ['8 GiB', '16 GiB', '32 GiB', '64 GiB', '24 GB GPU', '80 GB GPU'] as const;
export type MachineClass = (typeof MACHINE_CLASSES)[number];

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

/**
 * The machine a class stands for, as the memory plan sees it: RAM (less the plan's reserve for the system),
 * or a GPU with half a GiB less free than its size (the CUDA context), all layers on it (as bench/capacity.ts).
 */
export function machineOf(cls: MachineClass): Machine {
  const size = Number(/^\d+/.exec(cls)![0]);
  return cls.endsWith('GPU')
    ? { memoryBytes: 64 * GIB, gpus: [{ name: `${size} GB GPU`, freeBytes: size * GIB - 512 * MIB }] }
    : { memoryBytes: size * GIB, gpus: [] };
}

/** A model's published shape: what the memory plan needs (KV per token, sliding-window layers, trained context). */
export interface PublishedShape {
  arch: string;
  layers: number;
  embd: number;
  heads: number;
  kvHeads: number;
  /** Head size, when it is not embd / heads. */
  headDim?: number;
  context: number;
  slidingWindow?: number;
}

export interface CatalogueEntry {
  alias: string;
  repo: string;
  file: string;
  family: ModelFamily;
  /** The file's size as the hub lists it (decimal bytes). */
  downloadBytes: number;
  /** The machine sizes it is the pick for. */
  machines: readonly MachineClass[];
  shape: PublishedShape;
  /** One line: what it is and why it is here. */
  summary: string;
}

export const CATALOGUE: readonly CatalogueEntry[] = [
  {
    alias: 'qwen3-4b',
    repo: 'unsloth/Qwen3-4B-Instruct-2507-GGUF',
    file: 'Qwen3-4B-Instruct-2507-Q4_K_M.gguf',
    family: 'qwen3',
    downloadBytes: 2.5e9,
    machines: ['8 GiB', '16 GiB'],
    shape: { arch: 'qwen3', layers: 36, embd: 2560, heads: 32, kvHeads: 8, headDim: 128, context: 262144 },
    summary: 'Qwen3-4B-Instruct-2507, 4-bit: the default; tool use and coding well above its size, 256k context',
  },
  {
    alias: 'llama-3.1-8b',
    repo: 'bartowski/Meta-Llama-3.1-8B-Instruct-GGUF',
    file: 'Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf',
    family: 'llama3',
    downloadBytes: 4.92e9,
    machines: ['16 GiB'],
    shape: { arch: 'llama', layers: 32, embd: 4096, heads: 32, kvHeads: 8, context: 131072 },
    summary: 'Llama-3.1-8B-Instruct, 4-bit: the alternative on 16 GiB; weaker at coding than qwen3-4b',
  },
  {
    alias: 'gpt-oss-20b',
    repo: 'ggml-org/gpt-oss-20b-GGUF',
    file: 'gpt-oss-20b-mxfp4.gguf',
    family: 'gpt-oss',
    downloadBytes: 12.1e9,
    machines: ['32 GiB', '24 GB GPU'],
    shape: { arch: 'gpt-oss', layers: 24, embd: 2880, heads: 64, kvHeads: 8, headDim: 64, context: 131072, slidingWindow: 128 },
    summary: "gpt-oss-20b (MoE, 3.6B active), OpenAI's MXFP4 weights: strong tool use, always reasons",
  },
  {
    alias: 'qwen3-coder-30b',
    repo: 'unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF',
    file: 'Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf',
    family: 'qwen3-coder',
    downloadBytes: 18.6e9,
    machines: ['32 GiB', '24 GB GPU'],
    shape: { arch: 'qwen3moe', layers: 48, embd: 2048, heads: 32, kvHeads: 4, headDim: 128, context: 262144 },
    summary: 'Qwen3-Coder-30B-A3B-Instruct (MoE, 3.3B active), 4-bit: made for agentic coding, 256k context',
  },
  {
    alias: 'devstral-small',
    repo: 'unsloth/Devstral-Small-2507-GGUF',
    file: 'Devstral-Small-2507-Q4_K_M.gguf',
    family: 'devstral',
    downloadBytes: 14.3e9,
    machines: ['24 GB GPU'],
    shape: { arch: 'llama', layers: 40, embd: 5120, heads: 32, kvHeads: 8, headDim: 128, context: 131072 },
    summary: "Devstral-Small-2507 (24B dense), 4-bit: Mistral's coding agent; slow on a CPU",
  },
  {
    alias: 'qwen3-coder-30b-q8',
    repo: 'unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF',
    file: 'Qwen3-Coder-30B-A3B-Instruct-Q8_0.gguf',
    family: 'qwen3-coder',
    downloadBytes: 32.5e9,
    machines: ['64 GiB', '80 GB GPU'],
    shape: { arch: 'qwen3moe', layers: 48, embd: 2048, heads: 32, kvHeads: 4, headDim: 128, context: 262144 },
    summary: 'Qwen3-Coder-30B-A3B-Instruct, 8-bit: the same model nearly at full precision, with room for 256k',
  },
];

/** The model used when none is configured. */
export const DEFAULT_ALIAS = 'qwen3-4b';

/** Aliases kept outside the catalogue: older defaults, not recommended for Claude Code. */
export const LEGACY_ALIASES: Readonly<Record<string, { ref: string; note: string }>> = {
  'phi-3-mini': {
    ref: 'second-state/Phi-3-mini-128k-instruct-GGUF/Phi-3-mini-128k-instruct-Q4_K_M.gguf',
    note: 'Phi-3-mini-128k-instruct, 4-bit, 2.4 GB: the old default; no tool-call format, 384 KiB of KV per token',
  },
};

export const catalogueEntry = (alias: string): CatalogueEntry | undefined => CATALOGUE.find((e) => e.alias === alias);

/** The GGUF header entries the preflight reads for the KV shape, from a published shape. */
export function shapeMetadata(s: PublishedShape): GgufMetadata {
  const u32 = (value: number): GgufValue => ({ type: 'uint32', value });
  const a = s.arch;
  const entries: [string, GgufValue][] = [
    [`${a}.embedding_length`, u32(s.embd)],
    [`${a}.attention.head_count`, u32(s.heads)],
    [`${a}.attention.head_count_kv`, u32(s.kvHeads)],
  ];
  if (s.headDim !== undefined) entries.push([`${a}.attention.key_length`, u32(s.headDim)], [`${a}.attention.value_length`, u32(s.headDim)]);
  if (s.slidingWindow !== undefined) entries.push([`${a}.attention.sliding_window`, u32(s.slidingWindow)]);
  return new Map(entries);
}

/** The engine settings a plan uses by default: the built-in config's (config/pensieve.toml). */
export const DEFAULT_PLAN_ENGINE: PlanEngine = { slots: 4, maxContext: 0, poolTokens: 0, kvType: 'auto', ubatchSize: 512, flashAttention: 'auto' };

/** The memory plan of an entry on `machine`: what one session gets (plan.maxContext) and of which KV type. */
export function planEntry(entry: CatalogueEntry, machine: Machine, engine: PlanEngine = DEFAULT_PLAN_ENGINE, gpuLayers = -1): MemoryPlan {
  const { shape } = entry;
  return planMemory({
    model: { path: entry.alias, fileBytes: entry.downloadBytes, trainedContext: shape.context, kv: kvShape(shapeMetadata(shape), shape.arch, shape.layers) },
    engine,
    gpuLayers,
    machine,
  });
}

/** "153k q8_0" (one session's longest context and the KV type), or "does not fit". */
export function expectedContext(plan: MemoryPlan): string {
  return plan.fits ? `${Math.floor(plan.maxContext / 1000)}k ${plan.kvType}` : 'does not fit';
}
