/**
 * Generates random-weight models that llama.cpp loads and runs: the real tokenizer and chat template
 * (copied from a vocab-only GGUF, with a family's template and added tokens when given), any shape,
 * deterministic weights from a seed. Their output is gibberish, but their speed and memory use are
 * those of a trained model of that shape. Architectures: qwen2 (the tests' tiny model), and for the
 * model families of the catalogue (src/model/catalogue.ts) qwen3, qwen3moe, llama and gpt-oss, with
 * the tensors each llama.cpp loader asks for (native/deps/llama.cpp/src/models/<arch>.cpp).
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
  /** Head size, when it is not embd / heads (qwen3, gpt-oss). */
  headDim?: number;
  /** Mixture of experts (qwen3moe, gpt-oss): every layer's FFN is `count` experts of `ffn` rows, `used` per token. */
  experts?: { count: number; used: number; ffn: number };
  /** Tokens a sliding-window layer attends back (gpt-oss: every other layer). */
  slidingWindow?: number;
}

/** The architectures this generator writes (general.architecture). */
export type RandomArch = 'qwen2' | 'qwen3' | 'qwen3moe' | 'llama' | 'gpt-oss';

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
  return modelTensors('qwen2', shape, vocabSize, weightType);
}

/**
 * The tensors of `arch`'s loader (llama-model.cpp and src/models/<arch>.cpp), in the order converted models
 * store them. The output projection is tied to token_embd.weight where the loader allows it (all but gpt-oss).
 */
export function modelTensors(arch: RandomArch, shape: ModelShape, vocabSize: number, weightType: WeightType = 'q8_0'): PlannedTensor[] {
  const { embd, ffn } = shape;
  const headDim = shape.headDim ?? embd / shape.heads;
  const qDim = headDim * shape.heads;
  const kvDim = headDim * shape.kvHeads;
  const matrixType = WEIGHT_TYPES[weightType].ggml;
  const matrix = (name: string, ...dims: number[]): PlannedTensor => ({ name, dims, type: matrixType, init: 'random' });
  const vector = (name: string, length: number, init: PlannedTensor['init']): PlannedTensor =>
    ({ name, dims: [length], type: GgmlType.F32, init });
  const bias = (name: string, ...dims: number[]): PlannedTensor => ({ name, dims, type: GgmlType.F32, init: 'random' });
  const biased = arch === 'qwen2' || arch === 'gpt-oss';
  const experts = shape.experts;

  const tensors = [matrix('token_embd.weight', embd, vocabSize), vector('output_norm.weight', embd, 'ones')];
  if (arch === 'gpt-oss') tensors.push(matrix('output.weight', embd, vocabSize));
  for (let i = 0; i < shape.layers; i++) {
    const blk = `blk.${i}`;
    tensors.push(vector(`${blk}.attn_norm.weight`, embd, 'ones'));
    for (const [name, rows] of [['attn_q', qDim], ['attn_k', kvDim], ['attn_v', kvDim]] as const) {
      tensors.push(matrix(`${blk}.${name}.weight`, embd, rows));
      if (biased) tensors.push(bias(`${blk}.${name}.bias`, rows));
    }
    tensors.push(matrix(`${blk}.attn_output.weight`, qDim, embd));
    if (arch === 'gpt-oss') tensors.push(bias(`${blk}.attn_output.bias`, embd), bias(`${blk}.attn_sinks.weight`, shape.heads));
    if (arch === 'qwen3' || arch === 'qwen3moe') tensors.push(vector(`${blk}.attn_k_norm.weight`, headDim, 'ones'), vector(`${blk}.attn_q_norm.weight`, headDim, 'ones'));
    // gpt-oss names the norm before its FFN post_attention_norm; the others ffn_norm.
    tensors.push(vector(`${blk}.${arch === 'gpt-oss' ? 'post_attention_norm' : 'ffn_norm'}.weight`, embd, 'ones'));
    if (arch === 'qwen3moe' || arch === 'gpt-oss') {
      if (!experts) throw new Error(`${arch} needs shape.experts`);
      const { count, ffn: expertFfn } = experts;
      tensors.push(matrix(`${blk}.ffn_gate_inp.weight`, embd, count));
      tensors.push(
        matrix(`${blk}.ffn_gate_exps.weight`, embd, expertFfn, count),
        matrix(`${blk}.ffn_down_exps.weight`, expertFfn, embd, count),
        matrix(`${blk}.ffn_up_exps.weight`, embd, expertFfn, count),
      );
      if (arch === 'gpt-oss')
        tensors.push(
          bias(`${blk}.ffn_gate_inp.bias`, count),
          bias(`${blk}.ffn_gate_exps.bias`, expertFfn, count),
          bias(`${blk}.ffn_down_exps.bias`, embd, count),
          bias(`${blk}.ffn_up_exps.bias`, expertFfn, count),
        );
    } else {
      tensors.push(matrix(`${blk}.ffn_gate.weight`, embd, ffn), matrix(`${blk}.ffn_up.weight`, embd, ffn), matrix(`${blk}.ffn_down.weight`, ffn, embd));
    }
  }
  return tensors;
}

function validateShape(arch: RandomArch, shape: ModelShape): void {
  const { experts, ...dims } = shape;
  const positive = [...Object.values(dims), ...Object.values(experts ?? {})].every((v) => Number.isInteger(v) && v > 0);
  if (!positive) throw new Error(`model shape must be positive integers: ${JSON.stringify(shape)}`);
  if (shape.headDim === undefined && shape.embd % shape.heads !== 0) throw new Error('embd must be a multiple of heads');
  if (shape.heads % shape.kvHeads !== 0) throw new Error('heads must be a multiple of kvHeads');
  if ((shape.headDim ?? shape.embd / shape.heads) % 2 !== 0) throw new Error('head size must be even for RoPE');
  const moe = arch === 'qwen3moe' || arch === 'gpt-oss';
  if (moe !== (experts !== undefined)) throw new Error(`${arch} ${moe ? 'needs' : 'takes no'} shape.experts`);
  if (experts && experts.used > experts.count) throw new Error('experts.used must be at most experts.count');
  if (arch === 'gpt-oss' && !shape.slidingWindow) throw new Error('gpt-oss needs shape.slidingWindow');
  if (arch === 'llama' && shape.headDim !== undefined && shape.headDim !== shape.embd / shape.heads)
    throw new Error("llama's head size is embd / heads");
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
export function* randomTensorData(tensor: PlannedTensor, next: () => number, std: number): Generator<Uint8Array> {
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

/** Per-architecture settings of the published models (rope base, norm epsilon). */
const ARCH_DEFAULTS: Readonly<Record<RandomArch, { ropeBase: number; rmsEps: number }>> = {
  qwen2: { ropeBase: 1_000_000, rmsEps: 1e-6 },
  qwen3: { ropeBase: 1_000_000, rmsEps: 1e-6 },
  qwen3moe: { ropeBase: 10_000_000, rmsEps: 1e-6 },
  llama: { ropeBase: 500_000, rmsEps: 1e-5 },
  'gpt-oss': { ropeBase: 150_000, rmsEps: 1e-5 },
};

function modelMetadata(arch: RandomArch, shape: ModelShape, weightType: WeightType, tokenizer: GgufMetadata): GgufMetadata {
  const u32 = (value: number): GgufValue => ({ type: 'uint32', value });
  const f32 = (value: number): GgufValue => ({ type: 'float32', value });
  const a = arch;
  const metadata: GgufMetadata = new Map<string, GgufValue>([
    ['general.architecture', { type: 'string', value: arch }],
    ['general.name', { type: 'string', value: `random-${arch}-${shape.layers}x${shape.embd}` }],
    [`${a}.context_length`, u32(shape.contextLength)],
    [`${a}.embedding_length`, u32(shape.embd)],
    [`${a}.block_count`, u32(shape.layers)],
    [`${a}.feed_forward_length`, u32(shape.ffn)],
    [`${a}.attention.head_count`, u32(shape.heads)],
    [`${a}.attention.head_count_kv`, u32(shape.kvHeads)],
    [`${a}.rope.freq_base`, f32(ARCH_DEFAULTS[arch].ropeBase)],
    [`${a}.attention.layer_norm_rms_epsilon`, f32(ARCH_DEFAULTS[arch].rmsEps)],
  ]);
  if (shape.headDim !== undefined) metadata.set(`${a}.attention.key_length`, u32(shape.headDim)).set(`${a}.attention.value_length`, u32(shape.headDim));
  if (shape.experts) {
    metadata.set(`${a}.expert_count`, u32(shape.experts.count)).set(`${a}.expert_used_count`, u32(shape.experts.used));
    metadata.set(`${a}.expert_feed_forward_length`, u32(shape.experts.ffn));
  }
  if (shape.slidingWindow) metadata.set(`${a}.attention.sliding_window`, u32(shape.slidingWindow));
  metadata.set('general.file_type', u32(WEIGHT_TYPES[weightType].fileType));
  for (const [key, value] of tokenizer) metadata.set(key, value);
  return metadata;
}

/** A token set at its id: a family's added token that the vocab file lacks, or names otherwise. */
export interface AddedToken {
  id: number;
  text: string;
  /** true: a control token (CONTROL, rendered only when asked); false: a user-defined one (always matched whole). */
  control: boolean;
}

/**
 * What a model family's tokenizer has that the vocab file does not: llama.cpp's vocab files are the base
 * tokenizers (models/ggml-vocab-*.gguf); a family's added tokens, special token ids and chat template go on top.
 */
export interface TokenizerChanges {
  /** Set at their ids; the vocabulary grows to hold them, and a token that had the same text elsewhere is renamed. */
  tokens?: readonly AddedToken[];
  /** Grow the vocabulary to this many tokens (placeholders [PAD<id>], control tokens as reserved ones are), as a model's padded embedding does. */
  vocabSize?: number;
  /** tokenizer.chat_template. */
  chatTemplate?: string;
  bosId?: number;
  eosId?: number;
  paddingId?: number;
  addBos?: boolean;
}

/** llama.cpp's token types (tokenizer.ggml.token_type). */
const TOKEN_TYPE = { control: 3, userDefined: 4 } as const;

function placeholder(id: number): string {
  return `[PAD${id}]`;
}

/** The tokenizer entries with `changes` applied (the vocab file's arrays are copied, not changed). */
export function applyTokenizerChanges(tokenizer: GgufMetadata, changes: TokenizerChanges): GgufMetadata {
  const out: GgufMetadata = new Map(tokenizer);
  const tokensEntry = tokenizer.get('tokenizer.ggml.tokens');
  const typesEntry = tokenizer.get('tokenizer.ggml.token_type');
  if (tokensEntry?.type !== 'array' || tokensEntry.itemType !== 'string') throw new Error('the vocab has no tokenizer.ggml.tokens');
  if (typesEntry?.type !== 'array' || typesEntry.itemType !== 'int32') throw new Error('the vocab has no tokenizer.ggml.token_type');
  const scoresEntry = tokenizer.get('tokenizer.ggml.scores');
  const tokens = [...tokensEntry.value];
  const types = [...typesEntry.value];
  const scores = scoresEntry?.type === 'array' && scoresEntry.itemType === 'float32' ? [...scoresEntry.value] : undefined;
  const added = changes.tokens ?? [];
  const size = Math.max(tokens.length, changes.vocabSize ?? 0, ...added.map((t) => t.id + 1));
  for (let id = tokens.length; id < size; id++) {
    tokens.push(placeholder(id));
    types.push(TOKEN_TYPE.control);
    scores?.push(0);
  }
  const idOf = new Map(tokens.map((text, id) => [text, id]));
  for (const { id, text, control } of added) {
    const other = idOf.get(text);
    if (other !== undefined && other !== id) {
      tokens[other] = placeholder(other);
      idOf.set(placeholder(other), other);
    }
    idOf.delete(tokens[id]!);
    tokens[id] = text;
    types[id] = control ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined;
    idOf.set(text, id);
  }
  if (new Set(tokens).size !== tokens.length) throw new Error('the changed vocabulary has duplicate tokens');
  out.set('tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: tokens });
  out.set('tokenizer.ggml.token_type', { type: 'array', itemType: 'int32', value: types });
  if (scores) out.set('tokenizer.ggml.scores', { type: 'array', itemType: 'float32', value: scores });
  const u32 = (value: number): GgufValue => ({ type: 'uint32', value });
  if (changes.bosId !== undefined) out.set('tokenizer.ggml.bos_token_id', u32(changes.bosId));
  if (changes.eosId !== undefined) out.set('tokenizer.ggml.eos_token_id', u32(changes.eosId));
  if (changes.paddingId !== undefined) out.set('tokenizer.ggml.padding_token_id', u32(changes.paddingId));
  if (changes.addBos !== undefined) out.set('tokenizer.ggml.add_bos_token', { type: 'bool', value: changes.addBos });
  if (changes.chatTemplate !== undefined) out.set('tokenizer.chat_template', { type: 'string', value: changes.chatTemplate });
  return out;
}

/** The tokenizer.* entries of a GGUF file (order and value types kept) and its vocabulary size. */
async function readTokenizer(vocabPath: string, changes?: TokenizerChanges): Promise<{ metadata: GgufMetadata; vocabSize: number }> {
  const { metadata } = await readGgufHeader(vocabPath);
  let tokenizer: GgufMetadata = new Map([...metadata].filter(([key]) => key.startsWith('tokenizer.')));
  if (changes) tokenizer = applyTokenizerChanges(tokenizer, changes);
  const tokens = tokenizer.get('tokenizer.ggml.tokens');
  if (tokens?.type !== 'array') throw new Error(`${vocabPath} has no tokenizer.ggml.tokens`);
  return { metadata: tokenizer, vocabSize: tokens.value.length };
}

export interface RandomModelOptions {
  /** A vocab-only GGUF (llama.cpp's models/ggml-vocab-*.gguf): its tokenizer.* entries are copied. */
  vocabPath: string;
  outPath: string;
  shape: ModelShape;
  /** Default qwen2. */
  arch?: RandomArch;
  tokenizer?: TokenizerChanges;
  seed?: number;
  weightType?: WeightType;
  weightStd?: number;
}

/** Writes a random-weight GGUF model of `arch` with the tokenizer of `vocabPath` (and `tokenizer`'s changes). */
export async function writeRandomModel(opts: RandomModelOptions): Promise<void> {
  const { shape, weightType = 'q8_0', arch = 'qwen2' } = opts;
  validateShape(arch, shape);
  const tokenizer = await readTokenizer(opts.vocabPath, opts.tokenizer);
  const next = mulberry32(opts.seed ?? 0);
  // One PRNG stream through all tensors in file order: the writer pulls them in that order.
  const tensors: GgufTensorSource[] = modelTensors(arch, shape, tokenizer.vocabSize, weightType).map((tensor) => ({
    ...tensor,
    data: () => randomTensorData(tensor, next, opts.weightStd ?? WEIGHT_STD),
  }));
  await writeGguf(opts.outPath, { metadata: modelMetadata(arch, shape, weightType, tokenizer.metadata), tensors });
}

/** Writes a random-weight qwen2 GGUF model with the tokenizer of `vocabPath`. */
export async function writeRandomQwen2Model(opts: Omit<RandomModelOptions, 'arch' | 'tokenizer'>): Promise<void> {
  await writeRandomModel({ ...opts, arch: 'qwen2' });
}
