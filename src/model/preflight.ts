// Checks a model file before it is loaded: a GGUF that llama.cpp reads, of an architecture it supports,
// and a memory plan (src/model/memory-plan.ts) that fits where its layers run. A model that does not
// fit would otherwise be loaded and swap or be killed; here it is refused with the numbers and a way out.
import { open, stat } from 'node:fs/promises';
import os from 'node:os';
import type { PensieveConfig } from '../config.js';
import { loadAddon, type DeviceInfo } from '../native.js';
import { readGgufHeader, type GgufMetadata } from './gguf.js';
import { llamaArchitectures } from './llama-architectures.js';
import { machineFrom, MemoryPlanError, planMemory, type KvLayer, type KvShape, type Machine, type MemoryPlan } from './memory-plan.js';

const GGUF_MAGIC = 'GGUF';
const GGUF_VERSIONS = [2, 3];

export class PreflightError extends Error {
  override name = 'PreflightError';
}

export interface ModelFacts {
  path: string;
  fileBytes: number;
  version: number;
  architecture: string;
  /** general.name, when the file has one. */
  name?: string;
  layers: number;
  /** The context length the model was trained for, when the file says. */
  trainedContext?: number;
  /** KV heads and sizes per layer, and which layers use a sliding window. */
  kv: KvShape;
}

/** A number from a scalar entry, or entry `layer` of an array one (per-layer values). */
function numberAt(metadata: GgufMetadata, key: string, layer = 0): number | undefined {
  const entry = metadata.get(key);
  if (entry === undefined) return undefined;
  const value = entry.type === 'array' ? entry.value[layer] : entry.value;
  return typeof value === 'number' || typeof value === 'bigint' ? Number(value) : undefined;
}

/** The magic and version, read first so that a file that is no GGUF at all gets a plain answer. */
async function checkSignature(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(8);
    const { bytesRead } = await fh.read(head, 0, 8, 0);
    if (bytesRead < 8 || head.toString('latin1', 0, 4) !== GGUF_MAGIC)
      throw new PreflightError(`${path} is not a GGUF file (it does not start with "GGUF")`);
    const version = head.readUInt32LE(4);
    if (!GGUF_VERSIONS.includes(version))
      throw new PreflightError(`${path}: GGUF version ${version} is not supported (llama.cpp reads versions 2 and 3)`);
  } finally {
    await fh.close();
  }
}

export async function inspectModel(path: string): Promise<ModelFacts> {
  const { size: fileBytes } = await stat(path).catch((err: NodeJS.ErrnoException) => {
    throw new PreflightError(`${path}: cannot read the model file (${err.code ?? err.message})`);
  });
  await checkSignature(path);
  const header = await readGgufHeader(path).catch((err: Error) => {
    throw new PreflightError(`${path}: damaged GGUF file: ${err.message}`);
  });
  const { metadata } = header;
  const arch = metadata.get('general.architecture');
  if (arch?.type !== 'string') throw new PreflightError(`${path}: no general.architecture in the GGUF metadata`);
  const architecture = arch.value;
  const supported = llamaArchitectures();
  if (supported && !supported.has(architecture))
    throw new PreflightError(`${path}: architecture "${architecture}" is not supported by this build of llama.cpp`);
  const layers = numberAt(metadata, `${architecture}.block_count`);
  if (layers === undefined) throw new PreflightError(`${path}: no ${architecture}.block_count in the GGUF metadata`);
  const name = metadata.get('general.name');
  return {
    path,
    fileBytes,
    version: header.version,
    architecture,
    name: name?.type === 'string' ? name.value : undefined,
    layers,
    trainedContext: numberAt(metadata, `${architecture}.context_length`),
    kv: kvShape(metadata, architecture, layers),
  };
}

/**
 * How llama.cpp's loaders mark sliding-window layers (native/deps/llama.cpp/src/models/<file>.cpp,
 * load_arch_hparams). `period` n goes through llama_hparams::set_swa_pattern: layer il is SWA when
 * il % n < n - 1 (the last layer of each period is full: gpt-oss alternates SWA, full, SWA, ...), or,
 * with `denseFirst`, when il % n != 0. A file's `<arch>.attention.sliding_window_pattern` overrides
 * the period when it is a number, and gives every layer's flag when it is an array (load_swa_pattern);
 * rules without a period take only the array. `when`: 'window>0' = SWA only when the file's
 * sliding_window is positive; 'not-window=0' = unless the file says 0 (llama4). `window` is the
 * sliding window when the file gives none, or always with `forceWindow`.
 * Architectures not listed (phi3 among them: llama.cpp ignores Phi-3's sliding_window) have no SWA
 * layers here: every layer is counted at the pool's size, which can only overestimate the memory.
 * Layers that share another layer's KV (gemma3n, gemma4) are counted too, for the same reason.
 */
interface SwaRule {
  period?: number;
  denseFirst?: boolean;
  when?: 'window>0' | 'not-window=0';
  window?: number;
  forceWindow?: boolean;
}
const SWA_RULES: Readonly<Record<string, SwaRule>> = {
  'gpt-oss': { period: 2 }, // openai-moe.cpp
  gemma2: { period: 2, window: 4096 },
  gemma3: { period: 6, when: 'window>0' },
  gemma3n: { period: 5 },
  gemma4: {},
  cohere2: { period: 4 },
  cohere2moe: { period: 4, denseFirst: true },
  llama4: { period: 4, when: 'not-window=0', window: 8192, forceWindow: true }, // chunked attention, same cache size
  olmo2: { period: 4, when: 'window>0' },
  plamo3: { period: 8, when: 'window>0' },
  afmoe: { period: 4, when: 'window>0' },
  mellum: { period: 4, when: 'window>0' },
  smallthinker: { period: 4, denseFirst: true, when: 'window>0', window: 4096, forceWindow: true },
  'exaone-moe': { period: 4, window: 128 },
  'muse-glimmer': { period: 4 },
  granite_swa: {},
  step35: {},
  mimo2: {},
  maple: {},
  spark2_5: {},
  dots3note: {},
};

/** Per-layer SWA flags and the window, as llama.cpp would set them for this file; undefined: no SWA. */
function slidingWindowLayers(metadata: GgufMetadata, arch: string, layers: number): { swa: boolean[]; window: number } | undefined {
  const rule = SWA_RULES[arch];
  if (!rule) return undefined;
  const fileWindow = numberAt(metadata, `${arch}.attention.sliding_window`);
  if (rule.when === 'window>0' && !(fileWindow !== undefined && fileWindow > 0)) return undefined;
  if (rule.when === 'not-window=0' && fileWindow === 0) return undefined;
  const window = rule.forceWindow ? rule.window : (fileWindow ?? rule.window);
  if (!window) return undefined;
  const pattern = metadata.get(`${arch}.attention.sliding_window_pattern`);
  let swa: boolean[];
  if (pattern?.type === 'array') {
    swa = Array.from({ length: layers }, (_, il) => Boolean(pattern.value[il]));
  } else {
    const period = numberAt(metadata, `${arch}.attention.sliding_window_pattern`) ?? rule.period;
    if (period === undefined) return undefined;
    // llama_hparams::set_swa_pattern; a period of 0 makes every layer SWA.
    swa = Array.from({ length: layers }, (_, il) => period === 0 || (rule.denseFirst ? il % period !== 0 : il % period < period - 1));
  }
  return swa.some(Boolean) ? { swa, window } : undefined;
}

/**
 * KV heads and head sizes per layer, with llama.cpp's defaults (llama_model_base::load_hparams):
 * head_count_kv = head_count, key and value lengths = embedding_length / head_count of layer 0, and
 * `key_length_swa` / `value_length_swa` for sliding-window layers. Head counts may be per layer
 * (arrays); a layer with no KV heads (recurrent, or without attention) keeps no KV.
 */
export function kvShape(metadata: GgufMetadata, arch: string, layers: number): KvShape {
  const embd = numberAt(metadata, `${arch}.embedding_length`);
  const heads0 = numberAt(metadata, `${arch}.attention.head_count`);
  const headDim = embd !== undefined && heads0 ? embd / heads0 : 0;
  const keyLength = heads0 ? (numberAt(metadata, `${arch}.attention.key_length`) ?? headDim) : 0;
  const valueLength = heads0 ? (numberAt(metadata, `${arch}.attention.value_length`) ?? headDim) : 0;
  const keyLengthSwa = numberAt(metadata, `${arch}.attention.key_length_swa`) ?? keyLength;
  const valueLengthSwa = numberAt(metadata, `${arch}.attention.value_length_swa`) ?? valueLength;
  const sliding = slidingWindowLayers(metadata, arch, layers);
  const kvLayers: KvLayer[] = [];
  for (let layer = 0; layer < layers; layer++) {
    const heads = numberAt(metadata, `${arch}.attention.head_count`, layer) ?? 0;
    const kvHeads = numberAt(metadata, `${arch}.attention.head_count_kv`, layer) ?? heads;
    const swa = sliding?.swa[layer] ?? false;
    kvLayers.push({ kvHeads, heads, swa, keyLength: swa ? keyLengthSwa : keyLength, valueLength: swa ? valueLengthSwa : valueLength });
  }
  return { layers: kvLayers, slidingWindow: sliding?.window ?? 0 };
}

/** RAM: the machine's, or a cgroup's limit when lower (a container). */
function ramBytes(): number {
  const limit = process.constrainedMemory?.() ?? 0;
  return limit > 0 ? Math.min(limit, os.totalmem()) : os.totalmem();
}

/**
 * This machine's memory and the GPUs llama.cpp would use (ggml's devices, through the addon). Without
 * the addon (not built yet) it is the CPU alone.
 */
export function detectMachine(): Machine {
  let devices: DeviceInfo[] = [];
  try {
    devices = loadAddon().devices();
  } catch {
    // No addon: validate still checks the file and plans for the CPU.
  }
  return machineFrom(devices, ramBytes());
}

export interface PreflightConfig {
  model: Pick<PensieveConfig['model'], 'gpuLayers' | 'checkMemory'>;
  engine: Pick<PensieveConfig['engine'], 'slots' | 'maxContext' | 'poolTokens' | 'kvType' | 'ubatchSize' | 'flashAttention'>;
}

/** The memory plan of an inspected model; throws PreflightError when it cannot be made or does not fit (with check_memory on). */
export function planFor(facts: ModelFacts, config: PreflightConfig, machine: Machine = detectMachine()): MemoryPlan {
  let plan: MemoryPlan;
  try {
    plan = planMemory({ model: facts, engine: config.engine, gpuLayers: config.model.gpuLayers, machine });
  } catch (err) {
    throw err instanceof MemoryPlanError ? new PreflightError(err.message) : err;
  }
  if (!plan.fits && config.model.checkMemory) throw new PreflightError(plan.advice ?? `${facts.path} does not fit in memory`);
  return plan;
}

/**
 * Inspects the model and plans its memory; throws PreflightError when it cannot or should not load. A
 * projector's weights (a vision model's mmproj) are counted with the model's, on the devices that hold them.
 */
export async function preflight(path: string, config: PreflightConfig, machine?: Machine, projector?: string): Promise<{ facts: ModelFacts; plan: MemoryPlan }> {
  const model = await inspectModel(path);
  const projectorBytes = projector === undefined ? 0 : (await inspectProjector(projector)).fileBytes;
  const facts = { ...model, fileBytes: model.fileBytes + projectorBytes };
  return { facts, plan: planFor(facts, config, machine) };
}

export interface ProjectorFacts {
  fileBytes: number;
  /** clip.projector_type: the projector's kind (mlp, gemma3, ...), which mtmd checks when it loads it. */
  projectorType: string;
}

/** Checks that a projector file is there and is a multimodal projector (a GGUF of mtmd's clip architecture). */
export async function inspectProjector(path: string): Promise<ProjectorFacts> {
  const { size: fileBytes } = await stat(path).catch(() => {
    throw new PreflightError(`projector file not found: ${path} (model.mmproj)`);
  });
  const header = await readGgufHeader(path).catch((err: Error) => {
    throw new PreflightError(`${path}: damaged GGUF file: ${err.message} (model.mmproj)`);
  });
  const architecture = header.metadata.get('general.architecture')?.value;
  if (architecture !== 'clip') {
    throw new PreflightError(`${path} is not a multimodal projector (its architecture is ${String(architecture)}, not clip): model.mmproj takes an mmproj GGUF`);
  }
  const type = header.metadata.get('clip.projector_type')?.value;
  return { fileBytes, projectorType: typeof type === 'string' ? type : 'unknown' };
}
