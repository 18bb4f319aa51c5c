// Checks a model file before it is loaded: a GGUF that llama.cpp reads, of an architecture it supports,
// whose weights and KV cache fit in this machine's memory. A model that does not fit would otherwise
// be loaded and swap or be killed; here it is refused with the numbers and a way out.
import { open, stat } from 'node:fs/promises';
import os from 'node:os';
import { readGgufHeader, type GgufMetadata } from './gguf.js';
import { llamaArchitectures } from './llama-architectures.js';

const GGUF_MAGIC = 'GGUF';
const GGUF_VERSIONS = [2, 3];
/** llama.cpp's default KV cache type. */
const F16_BYTES = 2;
const MIB = 1024 * 1024;
/** Compute buffers, the runtime and the prompt workers: a tenth of the weights, at least 512 MiB. */
const MARGIN_MIN = 512 * MIB;
const MARGIN_FRACTION = 0.1;
/** engine.context_per_slot's lower bound and the granularity of suggestions. */
const CONTEXT_STEP = 256;

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
  /** KV cache bytes per token of context: f16 keys and values over all layers. */
  kvBytesPerToken: number;
}

export interface RunShape {
  slots: number;
  contextPerSlot: number;
}

export interface MemoryEstimate {
  /** The file size: llama.cpp maps the weights whole. */
  weights: number;
  kvCache: number;
  margin: number;
  total: number;
  /** This machine's memory (os.totalmem()). */
  available: number;
  fits: boolean;
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
    kvBytesPerToken: kvBytesPerToken(metadata, architecture, layers),
  };
}

/**
 * llama.cpp's defaults: head_count_kv = head_count, key and value lengths = embedding_length /
 * head_count. Head counts may be per layer (arrays); a layer without attention has no KV.
 */
export function kvBytesPerToken(metadata: GgufMetadata, arch: string, layers: number): number {
  const embd = numberAt(metadata, `${arch}.embedding_length`);
  const heads0 = numberAt(metadata, `${arch}.attention.head_count`);
  const headDim = embd !== undefined && heads0 ? embd / heads0 : 0;
  const keyLength = numberAt(metadata, `${arch}.attention.key_length`) ?? headDim;
  const valueLength = numberAt(metadata, `${arch}.attention.value_length`) ?? headDim;
  let bytes = 0;
  for (let layer = 0; layer < layers; layer++) {
    const heads = numberAt(metadata, `${arch}.attention.head_count`, layer) ?? 0;
    const kvHeads = numberAt(metadata, `${arch}.attention.head_count_kv`, layer) ?? heads;
    bytes += kvHeads * (keyLength + valueLength) * F16_BYTES;
  }
  return bytes;
}

const marginFor = (weights: number) => Math.max(MARGIN_MIN, Math.ceil(weights * MARGIN_FRACTION));

export function estimateMemory(
  facts: Pick<ModelFacts, 'fileBytes' | 'kvBytesPerToken'>,
  run: RunShape,
  available = os.totalmem(),
): MemoryEstimate {
  const weights = facts.fileBytes;
  const kvCache = facts.kvBytesPerToken * run.slots * run.contextPerSlot;
  const margin = marginFor(weights);
  const total = weights + kvCache + margin;
  return { weights, kvCache, margin, total, available, fits: total <= available };
}

export const gib = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(1)} GiB`;

/** Why the model does not fit, and the largest settings that would. */
export function memoryAdvice(facts: Pick<ModelFacts, 'path' | 'kvBytesPerToken'>, run: RunShape, m: MemoryEstimate): string {
  const lines = [
    `${facts.path} needs about ${gib(m.total)} of memory, but this machine has ${gib(m.available)}:`,
    `  weights ${gib(m.weights)} + KV cache ${gib(m.kvCache)} (${run.slots} slots x ${run.contextPerSlot} tokens, ` +
      `${Math.round(facts.kvBytesPerToken / 1024)} KiB per token) + margin ${gib(m.margin)}`,
  ];
  const cells = Math.floor((m.available - m.weights - m.margin) / Math.max(facts.kvBytesPerToken, 1));
  if (cells < CONTEXT_STEP) {
    lines.push('The weights alone do not fit: use a smaller model or a smaller quantization.');
  } else {
    const context = Math.floor(cells / run.slots / CONTEXT_STEP) * CONTEXT_STEP;
    const slots = Math.floor(cells / run.contextPerSlot);
    const options = [
      context >= CONTEXT_STEP && `engine.context_per_slot = ${context} (with ${run.slots} slots)`,
      slots >= 1 && `engine.slots = ${slots} (with ${run.contextPerSlot} tokens each)`,
    ].filter(Boolean);
    if (options.length === 0) options.push(`engine.slots = 1 and engine.context_per_slot = ${Math.floor(cells / CONTEXT_STEP) * CONTEXT_STEP}`);
    lines.push(
      `Try ${options.join(', or ')}: in a config file, or as PENSIEVE_ENGINE_SLOTS / PENSIEVE_ENGINE_CONTEXT_PER_SLOT.`,
    );
  }
  lines.push('model.check_memory = false skips this check (e.g. when a GPU holds the model).');
  return lines.join('\n');
}

/** Below this many tokens per slot, a fitted context is too small for an agent's prompt: refuse instead. */
export const MIN_FITTED_CONTEXT = 8192;

/**
 * The largest context per slot (a multiple of 256, at most `run.contextPerSlot`) with which the model
 * fits; undefined when even MIN_FITTED_CONTEXT does not.
 */
export function fitContext(facts: Pick<ModelFacts, 'fileBytes' | 'kvBytesPerToken'>, run: RunShape, available = os.totalmem()): number | undefined {
  const margin = marginFor(facts.fileBytes);
  const cells = Math.floor((available - facts.fileBytes - margin) / Math.max(facts.kvBytesPerToken, 1));
  const context = Math.min(run.contextPerSlot, Math.floor(cells / run.slots / CONTEXT_STEP) * CONTEXT_STEP);
  return context >= MIN_FITTED_CONTEXT ? context : undefined;
}

export interface PreflightOptions extends RunShape {
  checkMemory: boolean;
  /** Defaults to os.totalmem(). */
  available?: number;
}

/**
 * Inspects the model and estimates its memory; throws PreflightError when it cannot or should not load.
 * With `fitContext`, a context per slot that does not fit is lowered to one that does (`contextPerSlot`
 * in the result) rather than refused.
 */
export async function preflight(
  path: string,
  opts: PreflightOptions & { fitContext?: boolean },
): Promise<{ facts: ModelFacts; memory: MemoryEstimate; contextPerSlot: number }> {
  const facts = await inspectModel(path);
  let memory = estimateMemory(facts, opts, opts.available);
  let contextPerSlot = opts.contextPerSlot;
  if (opts.checkMemory && !memory.fits && opts.fitContext) {
    const fitted = fitContext(facts, opts, opts.available);
    if (fitted !== undefined) {
      contextPerSlot = fitted;
      memory = estimateMemory(facts, { ...opts, contextPerSlot }, opts.available);
    }
  }
  if (opts.checkMemory && !memory.fits) throw new PreflightError(memoryAdvice(facts, opts, memory));
  return { facts, memory, contextPerSlot };
}
