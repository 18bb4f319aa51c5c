/**
 * Generates random-weight qwen2 models that llama.cpp loads and runs: the real tokenizer and chat
 * template (copied from a vocab-only GGUF), any shape, deterministic weights from a seed. Their
 * output is gibberish, but their speed and memory use are those of a trained model of that shape.
 */
import {
  encodeTensorData,
  GgmlType,
  readGgufHeader,
  rowByteLength,
  writeGguf,
  type GgufMetadata,
  type GgufTensorSource,
  type GgufValue,
} from './gguf.js';
import { mulberry32 } from '../prng.js';

export interface ModelShape {
  layers: number;
  embd: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  contextLength: number;
}

export type WeightType = 'q8_0' | 'f16' | 'f32';

export type ModelPreset = 'tiny' | 'small' | 'qwen2.5-0.5b';

export const MODEL_PRESETS: Record<ModelPreset, ModelShape> = {
  tiny: { layers: 2, embd: 64, heads: 4, kvHeads: 2, ffn: 128, contextLength: 4096 },
  small: { layers: 8, embd: 512, heads: 8, kvHeads: 2, ffn: 1408, contextLength: 32768 },
  'qwen2.5-0.5b': { layers: 24, embd: 896, heads: 14, kvHeads: 2, ffn: 4864, contextLength: 32768 },
};

const WEIGHT_TYPES: Record<WeightType, { ggml: GgmlType; fileType: number }> = {
  // fileType is llama.cpp's llama_ftype, stored as general.file_type.
  q8_0: { ggml: GgmlType.Q8_0, fileType: 7 },
  f16: { ggml: GgmlType.F16, fileType: 1 },
  f32: { ggml: GgmlType.F32, fileType: 0 },
};

/** Scale of random matrices and biases, as in common transformer initialisation. */
const WEIGHT_STD = 0.02;
/** Floats generated per chunk: bounds memory whatever the model size. */
const CHUNK_VALUES = 1 << 20;

export interface PlannedTensor {
  name: string;
  /** ggml order: dims[0] is the row length. */
  dims: number[];
  type: GgmlType;
  /** Norm weights start at 1 (identity scaling); everything else is random. */
  init: 'ones' | 'random';
}

/**
 * The tensors llama.cpp's qwen2 loader expects, in the order converted models store them.
 * No output.weight: like Qwen2.5-0.5B the output projection is tied to token_embd.weight.
 */
export function qwen2Tensors(shape: ModelShape, vocabSize: number, weightType: WeightType = 'q8_0'): PlannedTensor[] {
  const { embd, ffn } = shape;
  const kvDim = (embd / shape.heads) * shape.kvHeads;
  const matrixType = WEIGHT_TYPES[weightType].ggml;
  const matrix = (name: string, cols: number, rows: number): PlannedTensor =>
    ({ name, dims: [cols, rows], type: matrixType, init: 'random' });
  const vector = (name: string, length: number, init: PlannedTensor['init']): PlannedTensor =>
    ({ name, dims: [length], type: GgmlType.F32, init });

  const tensors = [matrix('token_embd.weight', embd, vocabSize), vector('output_norm.weight', embd, 'ones')];
  for (let i = 0; i < shape.layers; i++) {
    const blk = `blk.${i}`;
    tensors.push(
      vector(`${blk}.attn_norm.weight`, embd, 'ones'),
      matrix(`${blk}.attn_q.weight`, embd, embd),
      vector(`${blk}.attn_q.bias`, embd, 'random'),
      matrix(`${blk}.attn_k.weight`, embd, kvDim),
      vector(`${blk}.attn_k.bias`, kvDim, 'random'),
      matrix(`${blk}.attn_v.weight`, embd, kvDim),
      vector(`${blk}.attn_v.bias`, kvDim, 'random'),
      matrix(`${blk}.attn_output.weight`, embd, embd),
      vector(`${blk}.ffn_norm.weight`, embd, 'ones'),
      matrix(`${blk}.ffn_gate.weight`, embd, ffn),
      matrix(`${blk}.ffn_up.weight`, embd, ffn),
      matrix(`${blk}.ffn_down.weight`, ffn, embd),
    );
  }
  return tensors;
}

function validateShape(shape: ModelShape): void {
  const positive = Object.values(shape).every((v) => Number.isInteger(v) && v > 0);
  if (!positive) throw new Error(`model shape must be positive integers: ${JSON.stringify(shape)}`);
  if (shape.embd % shape.heads !== 0) throw new Error('embd must be a multiple of heads');
  if (shape.heads % shape.kvHeads !== 0) throw new Error('heads must be a multiple of kvHeads');
  if ((shape.embd / shape.heads) % 2 !== 0) throw new Error('head size must be even for RoPE');
}

/**
 * Fills with zero-mean values of standard deviation `std`: the sum of two 16-bit uniforms from
 * one PRNG draw (a triangular distribution), which is normal enough and costs one draw per value.
 */
function fillRandom(values: Float32Array, std: number, next: () => number): void {
  // Each 16-bit uniform has variance ~65536²/12, so the centred sum has std 65536/√6.
  const scale = (std * Math.sqrt(6)) / 65536;
  for (let i = 0; i < values.length; i++) {
    const r = next();
    values[i] = ((r & 0xffff) + (r >>> 16) - 0xffff) * scale;
  }
}

/** Streams a tensor's encoded data a chunk of whole rows at a time, reusing two buffers. */
function* randomTensorData(tensor: PlannedTensor, next: () => number, std: number): Generator<Uint8Array> {
  const rowLength = tensor.dims[0]!;
  const rows = tensor.dims.slice(1).reduce((a, b) => a * b, 1);
  const rowsPerChunk = Math.max(1, Math.min(rows, Math.floor(CHUNK_VALUES / rowLength)));
  const values = new Float32Array(rowsPerChunk * rowLength);
  const bytes = Buffer.alloc(rowsPerChunk * rowByteLength(rowLength, tensor.type));
  for (let row = 0; row < rows; row += rowsPerChunk) {
    const chunk = values.subarray(0, Math.min(rowsPerChunk, rows - row) * rowLength);
    if (tensor.init === 'ones') chunk.fill(1);
    else fillRandom(chunk, std, next);
    yield bytes.subarray(0, encodeTensorData(chunk, tensor.type, bytes));
  }
}

function modelMetadata(shape: ModelShape, weightType: WeightType, tokenizer: GgufMetadata): GgufMetadata {
  const u32 = (value: number): GgufValue => ({ type: 'uint32', value });
  const f32 = (value: number): GgufValue => ({ type: 'float32', value });
  const metadata: GgufMetadata = new Map<string, GgufValue>([
    ['general.architecture', { type: 'string', value: 'qwen2' }],
    ['general.name', { type: 'string', value: `random-qwen2-${shape.layers}x${shape.embd}` }],
    ['qwen2.context_length', u32(shape.contextLength)],
    ['qwen2.embedding_length', u32(shape.embd)],
    ['qwen2.block_count', u32(shape.layers)],
    ['qwen2.feed_forward_length', u32(shape.ffn)],
    ['qwen2.attention.head_count', u32(shape.heads)],
    ['qwen2.attention.head_count_kv', u32(shape.kvHeads)],
    ['qwen2.rope.freq_base', f32(1_000_000)],
    ['qwen2.attention.layer_norm_rms_epsilon', f32(1e-6)],
    ['general.file_type', u32(WEIGHT_TYPES[weightType].fileType)],
  ]);
  for (const [key, value] of tokenizer) metadata.set(key, value);
  return metadata;
}

/** The tokenizer.* entries of a GGUF file (order and value types kept) and its vocabulary size. */
async function readTokenizer(vocabPath: string): Promise<{ metadata: GgufMetadata; vocabSize: number }> {
  const { metadata } = await readGgufHeader(vocabPath);
  const tokenizer: GgufMetadata = new Map([...metadata].filter(([key]) => key.startsWith('tokenizer.')));
  const tokens = tokenizer.get('tokenizer.ggml.tokens');
  if (tokens?.type !== 'array') throw new Error(`${vocabPath} has no tokenizer.ggml.tokens`);
  return { metadata: tokenizer, vocabSize: tokens.value.length };
}

/** Writes a random-weight qwen2 GGUF model with the tokenizer of `vocabPath`. */
export async function writeRandomQwen2Model(opts: {
  vocabPath: string;
  outPath: string;
  shape: ModelShape;
  seed?: number;
  weightType?: WeightType;
  weightStd?: number;
}): Promise<void> {
  const { shape, weightType = 'q8_0' } = opts;
  validateShape(shape);
  const tokenizer = await readTokenizer(opts.vocabPath);
  const next = mulberry32(opts.seed ?? 0);
  // One PRNG stream through all tensors in file order: the writer pulls them in that order.
  const tensors: GgufTensorSource[] = qwen2Tensors(shape, tokenizer.vocabSize, weightType).map((tensor) => ({
    ...tensor,
    data: () => randomTensorData(tensor, next, opts.weightStd ?? WEIGHT_STD),
  }));
  await writeGguf(opts.outPath, { metadata: modelMetadata(shape, weightType, tokenizer.metadata), tensors });
}
