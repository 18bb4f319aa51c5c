/**
 * Generates random-weight multimodal projectors (mmproj GGUF files) that llama.cpp's mtmd library loads: a
 * CLIP-style vision encoder and, into a text model's embedding width, either an LLaVA MLP projector ("mlp":
 * two linear layers with GELU between, the projector type that needs the fewest tensors; an image becomes
 * (imageSize / patchSize)² tokens, attending causally) or Gemma 3's ("gemma3": the patches average-pooled
 * by `merge` per side, then normed and projected; its image tokens attend to each other both ways). Keys
 * and tensors as native/deps/llama.cpp/tools/mtmd/clip.cpp loads them (load_hparams, load_tensors,
 * models/llava.cpp, models/siglip.cpp).
 */
import { GgmlType, writeGguf, type GgufMetadata, type GgufTensorSource, type GgufValue } from './gguf.js';
import { randomTensorData, type PlannedTensor } from './random-model.js';
import { mulberry32 } from '../prng.js';

export interface ProjectorShape {
  type: 'mlp' | 'gemma3';
  /** gemma3: patches per side merged into one token's side. */
  merge?: number;
  /** Side of the square the image is resized to, in pixels. */
  imageSize: number;
  /** Side of a patch, in pixels: each patch is one image token. */
  patchSize: number;
  /** The vision encoder's width, layers, heads and feed-forward width. */
  embd: number;
  layers: number;
  heads: number;
  ffn: number;
}

/** 32 x 32 pixels in 4 x 4 patches: 64 image tokens. */
export const TINY_PROJECTOR: ProjectorShape = { type: 'mlp', imageSize: 32, patchSize: 4, embd: 32, layers: 2, heads: 2, ffn: 64 };
/** The same patches, 2 x 2 of them to a token: 16 image tokens, attending both ways. */
export const TINY_GEMMA3_PROJECTOR: ProjectorShape = { ...TINY_PROJECTOR, type: 'gemma3', merge: 2 };

export interface RandomProjectorOptions {
  outPath: string;
  shape: ProjectorShape;
  /** The text model's embedding width: the projector's output. */
  textEmbd: number;
  seed?: number;
  weightStd?: number;
}

/** The tensors the llava or siglip graph reads (no class embedding: every position is a patch). */
export function projectorTensors(shape: ProjectorShape, textEmbd: number): PlannedTensor[] {
  const { embd, ffn, patchSize } = shape;
  const patches = (shape.imageSize / patchSize) ** 2;
  const t = (name: string, dims: number[], init: PlannedTensor['init'] = 'random', type: GgmlType = GgmlType.F32): PlannedTensor => ({ name, dims, type, init });
  const tensors = [
    t('v.patch_embd.weight', [patchSize, patchSize, 3, embd], 'random', GgmlType.F16),
    t('v.position_embd.weight', [embd, patches]),
    t('v.pre_ln.weight', [embd], 'ones'),
    t('v.pre_ln.bias', [embd]),
  ];
  for (let il = 0; il < shape.layers; il++) {
    const b = `v.blk.${il}`;
    for (const name of ['attn_q', 'attn_k', 'attn_v', 'attn_out']) tensors.push(t(`${b}.${name}.weight`, [embd, embd], 'random', GgmlType.F16), t(`${b}.${name}.bias`, [embd]));
    tensors.push(t(`${b}.ln1.weight`, [embd], 'ones'), t(`${b}.ln1.bias`, [embd]), t(`${b}.ln2.weight`, [embd], 'ones'), t(`${b}.ln2.bias`, [embd]));
    tensors.push(t(`${b}.ffn_up.weight`, [embd, ffn], 'random', GgmlType.F16), t(`${b}.ffn_up.bias`, [ffn]));
    tensors.push(t(`${b}.ffn_down.weight`, [ffn, embd], 'random', GgmlType.F16), t(`${b}.ffn_down.bias`, [embd]));
  }
  if (shape.type === 'gemma3') {
    tensors.push(t('v.post_ln.weight', [embd], 'ones'), t('v.post_ln.bias', [embd]));
    tensors.push(t('mm.input_projection.weight', [textEmbd, embd], 'random', GgmlType.F16), t('mm.soft_emb_norm.weight', [embd], 'ones'));
    return tensors;
  }
  tensors.push(t('mm.0.weight', [embd, textEmbd], 'random', GgmlType.F16), t('mm.0.bias', [textEmbd]));
  tensors.push(t('mm.2.weight', [textEmbd, textEmbd], 'random', GgmlType.F16), t('mm.2.bias', [textEmbd]));
  return tensors;
}

function projectorMetadata(shape: ProjectorShape, textEmbd: number): GgufMetadata {
  const u32 = (value: number): GgufValue => ({ type: 'uint32', value });
  const f32s = (value: number[]): GgufValue => ({ type: 'array', itemType: 'float32', value });
  const metadata = new Map<string, GgufValue>([
    ['general.architecture', { type: 'string', value: 'clip' }],
    ['general.name', { type: 'string', value: `random-mmproj-${shape.type}-${shape.layers}x${shape.embd}` }],
    ['general.file_type', u32(1)],
    ['clip.has_vision_encoder', { type: 'bool', value: true }],
    ['clip.projector_type', { type: 'string', value: 'mlp' }],
    ['clip.use_gelu', { type: 'bool', value: true }],
    ['clip.vision.image_size', u32(shape.imageSize)],
    ['clip.vision.patch_size', u32(shape.patchSize)],
    ['clip.vision.embedding_length', u32(shape.embd)],
    ['clip.vision.feed_forward_length', u32(shape.ffn)],
    ['clip.vision.block_count', u32(shape.layers)],
    ['clip.vision.projection_dim', u32(textEmbd)],
    ['clip.vision.attention.head_count', u32(shape.heads)],
    ['clip.vision.attention.layer_norm_epsilon', { type: 'float32', value: 1e-6 }],
    ['clip.vision.image_mean', f32s([0.5, 0.5, 0.5])],
    ['clip.vision.image_std', f32s([0.5, 0.5, 0.5])],
  ]);
  if (shape.type === 'gemma3') {
    metadata.set('clip.projector_type', { type: 'string', value: 'gemma3' });
    metadata.set('clip.vision.projector.scale_factor', u32(shape.merge ?? 4));
  }
  return metadata;
}

/** Writes a random-weight LLaVA-style projector for a text model `textEmbd` wide. */
export async function writeRandomProjector(opts: RandomProjectorOptions): Promise<void> {
  const next = mulberry32(opts.seed ?? 0);
  const tensors: GgufTensorSource[] = projectorTensors(opts.shape, opts.textEmbd).map((tensor) => ({
    ...tensor,
    data: () => randomTensorData(tensor, next, opts.weightStd ?? 0.02),
  }));
  await writeGguf(opts.outPath, { metadata: projectorMetadata(opts.shape, opts.textEmbd), tensors });
}
