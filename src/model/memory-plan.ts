// The memory plan: of which type the KV cache is, how many cells its pool gets and how long one
// sequence's context may grow, from the model's shape and the memory where its layers run. Plain
// arithmetic over numbers passed in (the model's KV shape, the machine's memory), so that tests and
// bench/capacity can feed it any machine; src/model/preflight.ts reads the numbers from the GGUF file
// and from ggml's devices.
//
// What it follows in llama.cpp (native/deps/llama.cpp/src):
// - One pool (kv_unified): the context's n_ctx cells are shared by all sequences, and n_ctx is padded
//   up to a multiple of 256 (llama-context.cpp). Every full-attention layer holds K and V rows for each
//   cell (llama-kv-cache.cpp: ggml_new_tensor_3d(type, n_embd_k_gqa, kv_size, n_stream)).
// - Sliding-window layers (llama-kv-cache-iswa.cpp) get a cache of their own of
//   GGML_PAD(min(n_ctx, n_swa * n_seq_max + n_ubatch), 256) cells when unified and swa_full is false:
//   a fixed cost, whatever the pool's size. (llama_context_default_params sets swa_full = true, which
//   sizes those layers like the full ones: the engine must set it to false for this plan to hold.)
// - Rows of a quantized type are blocks of 32 elements: q8_0 is 34 bytes a block (32 int8 and an f16
//   scale), q4_0 18 (32 nibbles and an f16 scale); f16 is 2 bytes an element (ggml_row_size). Quantized
//   types need head sizes that are multiples of 32, and a quantized V cache needs flash attention
//   (llama_init_from_model refuses otherwise; "auto" turns flash attention on for it).
// - Layers on a GPU: with n_gpu_layers = g, the last g - 1 repeating layers and the output layer run on
//   the GPU (llama-model.cpp: i_gpu_start = n_layer + 1 - g; negative g = all), and their KV lives there
//   too (offload_kqv, the default).
// llama.cpp's own fitting, common_fit_params (common/fit.cpp), measures a no_alloc load of the model and
// context and lowers n_ctx (and the GPU layers) to fit the devices' free memory; it "assumes system
// memory is unlimited", so it says nothing on a CPU, and it fits one given KV type rather than choosing
// one. This plan makes those choices; on a GPU, common_get_device_memory_data (same file) could check its
// sizes exactly, compute buffers included.
import { KV_TYPES, type KvType, type FlashAttention } from '../config.js';
import type { DeviceInfo } from '../native.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

/** llama.cpp pads n_ctx (and each SWA cache) to this many cells. */
export const POOL_STEP = 256;
/** The smallest pool a sized plan accepts (the old per-slot floor); below it, refuse rather than serve a few thousand tokens. */
export const MIN_POOL_TOKENS = 8192;
/** Claude Code assumes a window of at least this many tokens (its auto-compact threshold cannot go lower). */
const LONG_SESSION_TOKENS = 100_000;
/** The session size that the plan counts ("how many 32k-token sessions fit at once"). */
export const SESSION_TOKENS = 32768;
/** The context target when the GGUF does not say what the model was trained for. */
const DEFAULT_TRAINED_CONTEXT = 131072;

/** Compute buffers, the runtime and the prompt workers: a tenth of the weights, at least 512 MiB. */
const MARGIN_MIN = 512 * MIB;
const MARGIN_FRACTION = 0.1;
/**
 * RAM kept for everything but the model: the OS, a desktop, an editor and Claude Code itself (a Node
 * process of several hundred MiB) run beside the server on the machines we target. 2 GiB is about
 * what an idle desktop OS takes; an eighth scales it for bigger machines, which run more beside (and
 * whose page cache should keep the model file's pages without pushing out everything else).
 */
const RESERVE_MIN = 2 * GIB;
const RESERVE_FRACTION = 1 / 8;

/** ggml's row layout of each KV type: bytes per block of elements (ggml_type_size / ggml_blck_size). */
const KV_TYPE_LAYOUT: Readonly<Record<KvType, { blockBytes: number; blockElements: number }>> = {
  f16: { blockBytes: 2, blockElements: 1 },
  q8_0: { blockBytes: 34, blockElements: 32 },
  q4_0: { blockBytes: 18, blockElements: 32 },
};

export class MemoryPlanError extends Error {
  override name = 'MemoryPlanError';
}

/** One layer's KV per cell, as llama_hparams has it. */
export interface KvLayer {
  /** KV heads; 0: the layer keeps no KV (a recurrent layer, or one without attention). */
  kvHeads: number;
  keyLength: number;
  valueLength: number;
  /** A sliding-window layer: it keeps only the window's cells (see the top of this file). */
  swa: boolean;
  /** Query heads: the f32 KQ scratch without flash attention is cells x ubatch x heads. */
  heads: number;
}

export interface KvShape {
  /** One entry per block (block_count). */
  layers: KvLayer[];
  /** n_swa: the tokens a sliding-window layer attends back; 0 when no layer is SWA. */
  slidingWindow: number;
}

/** Bytes of one row of `elements` values of `type` (ggml_row_size); throws when blocks do not divide it. */
export function kvRowBytes(elements: number, type: KvType): number {
  const { blockBytes, blockElements } = KV_TYPE_LAYOUT[type];
  if (elements % blockElements !== 0) throw new MemoryPlanError(`${elements} values are not whole ${type} blocks of ${blockElements}`);
  return (elements / blockElements) * blockBytes;
}

/** Whether llama.cpp accepts `type` for this shape: head sizes must be whole blocks. */
export function kvTypeUsable(shape: KvShape, type: KvType): boolean {
  const { blockElements } = KV_TYPE_LAYOUT[type];
  return shape.layers.every((l) => l.kvHeads === 0 || (l.keyLength % blockElements === 0 && l.valueLength % blockElements === 0));
}

/** K and V bytes one cell takes in one layer. */
function layerBytesPerCell(layer: KvLayer, type: KvType): number {
  if (layer.kvHeads === 0) return 0;
  return kvRowBytes(layer.kvHeads * layer.keyLength, type) + kvRowBytes(layer.kvHeads * layer.valueLength, type);
}

const padCells = (cells: number) => Math.ceil(cells / POOL_STEP) * POOL_STEP;
const floorCells = (cells: number) => Math.floor(cells / POOL_STEP) * POOL_STEP;

/** Cells of each sliding-window layer's cache with a pool of `poolTokens` (llama_kv_cache_iswa, unified, swa_full off). */
export function swaCells(shape: KvShape, poolTokens: number, slots: number, ubatch: number): number {
  return padCells(Math.min(padCells(poolTokens), shape.slidingWindow * slots + ubatch));
}

/** Where the cells are counted: which layers' KV (default all). */
type LayerFilter = (layer: number) => boolean;
const allLayers: LayerFilter = () => true;

/**
 * KV bytes per pool cell: the full-attention layers' (sliding-window layers cost a fixed amount, see
 * kvCacheBytes). This is "KV per token" for a model without SWA.
 */
export function kvBytesPerToken(shape: KvShape, type: KvType, on: LayerFilter = allLayers): number {
  return shape.layers.reduce((sum, l, il) => sum + (on(il) && !l.swa ? layerBytesPerCell(l, type) : 0), 0);
}

/** The bytes of the sliding-window layers' caches (0 without SWA). */
function swaBytes(shape: KvShape, type: KvType, cells: number, on: LayerFilter = allLayers): number {
  return shape.layers.reduce((sum, l, il) => sum + (on(il) && l.swa ? layerBytesPerCell(l, type) * cells : 0), 0);
}

export interface PoolShape {
  poolTokens: number;
  slots: number;
  ubatch: number;
}

/** The whole KV cache of a pool: full layers x the pool's cells (padded as llama.cpp pads) + SWA caches. */
export function kvCacheBytes(shape: KvShape, type: KvType, pool: PoolShape, on: LayerFilter = allLayers): number {
  return (
    kvBytesPerToken(shape, type, on) * padCells(pool.poolTokens) +
    swaBytes(shape, type, swaCells(shape, pool.poolTokens, pool.slots, pool.ubatch), on)
  );
}

/** The machine as the plan sees it. */
export interface Machine {
  /** Bytes of RAM (the smaller of the machine's and a cgroup limit). */
  memoryBytes: number;
  /** The GPUs that llama.cpp would put layers on, with their free memory now. */
  gpus: { name: string; freeBytes: number }[];
}

/**
 * The GPUs llama.cpp uses (llama.cpp's llama_model_load: discrete GPUs; integrated ones only when
 * there is no discrete GPU), from ggml's devices (the addon's devices()).
 */
export function machineFrom(devices: readonly DeviceInfo[], memoryBytes: number): Machine {
  const discrete = devices.filter((d) => d.type === 'gpu');
  const gpus = discrete.length > 0 ? discrete : devices.filter((d) => d.type === 'igpu');
  return { memoryBytes, gpus: gpus.map((d) => ({ name: d.description || d.name, freeBytes: d.free })) };
}

export interface PlanEngine {
  slots: number;
  /** 0: the model's trained context. */
  maxContext: number;
  /** 0: as many cells as the memory holds, up to slots x max context. */
  poolTokens: number;
  kvType: KvType | 'auto';
  ubatchSize: number;
  flashAttention: FlashAttention;
}

export interface PlanInput {
  model: {
    path: string;
    /** The weights: the file size (llama.cpp maps or reads the file whole). */
    fileBytes: number;
    /** `<arch>.context_length`, when the file says. */
    trainedContext?: number;
    kv: KvShape;
  };
  engine: PlanEngine;
  /** model.gpu_layers: -1 all, 0 none (CPU only). */
  gpuLayers: number;
  machine: Machine;
}

/** The memory where some of the layers run, and what of the model it holds. */
interface Place {
  /** 'cpu', or the GPU's name. */
  device: string;
  /** RAM, or the GPU's free memory. */
  memoryBytes: number;
  /** Kept for the system (RAM only). */
  reserveBytes: number;
  weightsBytes: number;
  marginBytes: number;
  /** Which layers' KV lives here. */
  layers: LayerFilter;
  /** Layers that run here, for the rendering ("20 of 33 layers"); undefined: all. */
  share?: string;
}

const marginFor = (weights: number) => Math.max(MARGIN_MIN, Math.ceil(weights * MARGIN_FRACTION));
export const reserveFor = (memory: number) => Math.max(RESERVE_MIN, Math.ceil(memory * RESERVE_FRACTION));

function placesOf(input: PlanInput): Place[] {
  const { machine, model } = input;
  const layers = model.kv.layers.length;
  const cpu = (weights: number, on: LayerFilter, share?: string): Place => {
    const reserveBytes = reserveFor(machine.memoryBytes);
    return { device: 'cpu', memoryBytes: machine.memoryBytes, reserveBytes, weightsBytes: weights, marginBytes: marginFor(weights), layers: on, share };
  };
  if (machine.gpus.length === 0 || input.gpuLayers === 0) return [cpu(model.fileBytes, allLayers)];
  // llama.cpp's count: the output layer is one more, so g covers the last g - 1 repeating layers.
  const g = input.gpuLayers < 0 ? layers + 1 : Math.min(input.gpuLayers, layers + 1);
  const gpuStart = layers + 1 - g;
  const onGpu: LayerFilter = (il) => il >= gpuStart;
  // Weights in proportion to the layers offloaded (the output layer counted as one of n + 1).
  const gpuWeights = g === layers + 1 ? model.fileBytes : Math.round((model.fileBytes * g) / (layers + 1));
  const name = machine.gpus.length === 1 ? machine.gpus[0]!.name : `${machine.gpus.length} GPUs (${machine.gpus.map((d) => d.name).join(', ')})`;
  const free = machine.gpus.reduce((sum, d) => sum + d.freeBytes, 0);
  const share = g === layers + 1 ? undefined : `${g} of ${layers + 1} layers`;
  const gpu: Place = {
    device: name,
    memoryBytes: free,
    reserveBytes: 0,
    weightsBytes: gpuWeights,
    // Each GPU holds compute buffers of its own.
    marginBytes: Math.max(MARGIN_MIN * machine.gpus.length, Math.ceil(gpuWeights * MARGIN_FRACTION)),
    layers: onGpu,
    share,
  };
  if (g === layers + 1) return [gpu];
  return [gpu, cpu(model.fileBytes - gpuWeights, (il) => !onGpu(il), `${layers + 1 - g} of ${layers + 1} layers`)];
}

const budgetOf = (p: Place) => p.memoryBytes - p.reserveBytes - p.weightsBytes - p.marginBytes;

export interface MemoryPlan {
  kvType: KvType;
  /** KV cells shared by all sequences (llama.cpp's n_ctx). */
  poolTokens: number;
  /** Longest context of one sequence: min(the target, the pool). */
  maxContext: number;
  /** engine.max_context, or the model's trained context when that is 0. */
  contextTarget: number;
  targetFrom: 'engine.max_context' | 'model';
  slots: number;
  /** Sessions of 32k tokens that fit in the pool at once, at most slots. */
  sessionsAt32k: number;
  /** 'cpu' or the GPU's name: the memory that bounds the pool. */
  device: string;
  /** "20 of 33 layers" when the layers are split between a GPU and the CPU. */
  share?: string;
  /** RAM, or the GPU's free memory. */
  memoryBytes: number;
  /** Kept for the system and other programs (RAM only). */
  reserveBytes: number;
  weightsBytes: number;
  kvBytes: number;
  /** KV bytes per pool cell (full-attention layers; sliding-window layers are a fixed part of kvBytes). */
  kvBytesPerToken: number;
  /** The runtime's margin, and the attention scratch when flash attention is off. */
  marginBytes: number;
  /** What the KV cache may use there: memory - reserve - weights - margin. */
  budgetBytes: number;
  /** Whether weights + KV + margin fit; callers refuse a plan that does not, unless model.check_memory is false. */
  fits: boolean;
  /** Why it does not fit and what to set (when fits is false). */
  advice?: string;
}

interface Layout {
  kvType: KvType;
  poolTokens: number;
  fits: boolean;
  /** The place that bounds the pool (or does not fit). */
  place: Place;
}

/** Most cells of `type` this place holds beside its weights (full layers; SWA caches at their bound). */
function cellsIn(place: Place, input: PlanInput, type: KvType): number {
  const { kv } = input.model;
  const perCell = kvBytesPerToken(kv, type, place.layers) + scratchPerCell(input, place);
  const fixed = swaBytes(kv, type, padCells(kv.slidingWindow * input.engine.slots + input.engine.ubatchSize), place.layers);
  const room = budgetOf(place) - fixed;
  if (room < 0) return 0;
  return perCell === 0 ? Number.MAX_SAFE_INTEGER : Math.floor(room / perCell);
}

/**
 * Without flash attention llama.cpp materializes KQ in f32: cells x ubatch x heads per layer, the
 * buffer reused from layer to layer. With it ("on", or "auto", which llama.cpp turns on where the
 * device supports it, the CPU included) that scratch is a few tiles and is in the margin.
 */
function scratchPerCell(input: PlanInput, place: Place): number {
  if (input.engine.flashAttention !== 'off') return 0;
  const heads = Math.max(0, ...input.model.kv.layers.filter((_, il) => place.layers(il)).map((l) => (l.kvHeads > 0 ? l.heads : 0)));
  return input.engine.ubatchSize * heads * 4;
}

function kvNeed(place: Place, input: PlanInput, type: KvType, poolTokens: number): number {
  const { slots, ubatchSize } = input.engine;
  return kvCacheBytes(input.model.kv, type, { poolTokens, slots, ubatch: ubatchSize }, place.layers);
}

/** The target's multiple of 256 at or above: llama.cpp pads n_ctx up anyway. */
const poolCap = (input: PlanInput, target: number) => padCells(input.engine.slots * target);
const minPool = (input: PlanInput, target: number) => Math.min(MIN_POOL_TOKENS, poolCap(input, target));

function layoutFor(input: PlanInput, places: Place[], type: KvType, target: number): Layout {
  if (input.engine.poolTokens > 0) {
    const poolTokens = input.engine.poolTokens;
    const over = places.find((p) => kvNeed(p, input, type, poolTokens) + scratchPerCell(input, p) * padCells(poolTokens) > budgetOf(p));
    return { kvType: type, poolTokens, fits: over === undefined, place: over ?? places[0]! };
  }
  let bound = places[0]!;
  let cells = Infinity;
  for (const p of places) {
    const c = cellsIn(p, input, type);
    if (c < cells) [cells, bound] = [c, p];
  }
  const poolTokens = Math.min(floorCells(cells), poolCap(input, target));
  const floor = minPool(input, target);
  if (poolTokens >= floor) return { kvType: type, poolTokens, fits: true, place: bound };
  return { kvType: type, poolTokens: floor, fits: false, place: bound };
}

export const gib = (bytes: number) => `${(bytes / GIB).toFixed(1)} GiB`;
const kib = (bytes: number) => `${Math.round(bytes / KIB)} KiB`;

/** The most precise usable type first; quantized ones only with flash attention allowed. */
function usableTypes(input: PlanInput): KvType[] {
  return KV_TYPES.filter((t) => kvTypeUsable(input.model.kv, t) && (t === 'f16' || input.engine.flashAttention !== 'off'));
}

/**
 * Resolves engine.kv_type, engine.pool_tokens and engine.max_context for this model on this machine.
 * kv_type "auto" takes the most precise type with which one session reaches min(100k tokens, the
 * target, a given pool) in a pool that fits (q4_0, or the least precise usable type, when none does).
 * A pool of 0 is sized to the memory: as many cells as fit beside the weights, up to slots x the
 * target, in multiples of 256. Refusals that no setting of model.check_memory lifts (a kv_type this model or
 * flash_attention = "off" cannot use) throw MemoryPlanError; a plan that does not fit has fits = false
 * and advice, and callers refuse it unless model.check_memory is false.
 */
export function planMemory(input: PlanInput): MemoryPlan {
  const { engine, model } = input;
  const target = engine.maxContext > 0 ? engine.maxContext : model.trainedContext || DEFAULT_TRAINED_CONTEXT;
  const usable = usableTypes(input);
  if (engine.kvType !== 'auto' && !usable.includes(engine.kvType)) {
    throw new MemoryPlanError(
      engine.flashAttention === 'off' && kvTypeUsable(model.kv, engine.kvType)
        ? `engine.kv_type = "${engine.kvType}" needs flash attention (llama.cpp quantizes V only with it): set engine.flash_attention = "auto" or "on", or engine.kv_type = "f16"`
        : `${model.path}: engine.kv_type = "${engine.kvType}" needs key and value head sizes that are multiples of ` +
          `${KV_TYPE_LAYOUT[engine.kvType].blockElements}, which this model's are not: set engine.kv_type = "f16" (or "auto")`,
    );
  }
  const places = placesOf(input);
  // A given pool bounds every type's longest context alike: then the goal is what it holds.
  const goal = Math.min(LONG_SESSION_TOKENS, target, engine.poolTokens > 0 ? engine.poolTokens : Infinity);
  const candidates = engine.kvType === 'auto' ? usable : [engine.kvType];
  let layout = layoutFor(input, places, candidates[0]!, target);
  for (const type of candidates.slice(1)) {
    if (layout.fits && Math.min(target, layout.poolTokens) >= goal) break;
    layout = layoutFor(input, places, type, target);
  }
  const { place, poolTokens, kvType } = layout;
  const maxContext = Math.min(target, poolTokens);
  const marginBytes = place.marginBytes + scratchPerCell(input, place) * padCells(poolTokens);
  const plan: MemoryPlan = {
    kvType,
    poolTokens,
    maxContext,
    contextTarget: target,
    targetFrom: engine.maxContext > 0 ? 'engine.max_context' : 'model',
    slots: engine.slots,
    sessionsAt32k: maxContext >= SESSION_TOKENS ? Math.min(engine.slots, Math.floor(poolTokens / SESSION_TOKENS)) : 0,
    device: place.device,
    share: place.share,
    memoryBytes: place.memoryBytes,
    reserveBytes: place.reserveBytes,
    weightsBytes: place.weightsBytes,
    kvBytes: kvNeed(place, input, kvType, poolTokens),
    kvBytesPerToken: kvBytesPerToken(model.kv, kvType, place.layers),
    marginBytes,
    budgetBytes: place.memoryBytes - place.reserveBytes - place.weightsBytes - marginBytes,
    fits: layout.fits,
  };
  if (!layout.fits) plan.advice = adviceFor(input, places, plan, usable, target);
  return plan;
}

const where = (p: Pick<MemoryPlan, 'device' | 'memoryBytes' | 'reserveBytes'>) =>
  p.device === 'cpu'
    ? `this machine has ${gib(Math.max(0, p.memoryBytes - p.reserveBytes))} (${gib(p.memoryBytes)} of RAM less ${gib(p.reserveBytes)} kept for the system and other programs)`
    : `${p.device} has ${gib(p.memoryBytes)} free`;

/** Why the plan does not fit, and the settings that would. */
function adviceFor(input: PlanInput, places: Place[], plan: MemoryPlan, usable: KvType[], target: number): string {
  const need = plan.weightsBytes + plan.kvBytes + plan.marginBytes;
  const memory = plan.device === 'cpu' ? 'memory' : 'GPU memory';
  const lines = [
    `${input.model.path} needs about ${gib(need)} of ${memory} for a pool of ${plan.poolTokens} tokens of ${plan.kvType} KV cache, but ${where(plan)}:`,
    `  weights ${gib(plan.weightsBytes)} + KV cache ${gib(plan.kvBytes)} (${kib(plan.kvBytesPerToken)} per token) + margin ${gib(plan.marginBytes)}`,
  ];
  const least = usable[usable.length - 1]!;
  const sized = (type: KvType) => layoutFor({ ...input, engine: { ...input.engine, poolTokens: 0 } }, places, type, target);
  const options: string[] = [];
  if (input.engine.poolTokens > 0) {
    const auto = sized(plan.kvType);
    if (auto.fits) options.push(`engine.pool_tokens = 0 (sizes the pool to this memory: about ${auto.poolTokens} tokens)`);
    for (const type of usable.slice(usable.indexOf(plan.kvType) + 1)) {
      if (layoutFor(input, places, type, target).fits) {
        options.push(`engine.kv_type = "${type}" (the same pool in less memory)`);
        break;
      }
    }
  } else {
    for (const type of usable.slice(usable.indexOf(plan.kvType) + 1)) {
      if (sized(type).fits) {
        options.push(`engine.kv_type = "${type}"`);
        break;
      }
    }
  }
  const cells = floorCells(Math.min(...places.map((p) => cellsIn(p, input, least))));
  const starved = places.find((p) => budgetOf(p) <= 0);
  if (starved) {
    const split = places.length > 1;
    lines.push(
      starved.device !== 'cpu'
        ? 'The weights alone do not fit: put fewer layers on the GPU (model.gpu_layers), or use a smaller model or quantization.'
        : `The weights alone do not fit: use a smaller model or a smaller quantization${split ? ', or put more layers on the GPU (model.gpu_layers)' : ''}.`,
    );
  } else if (cells < POOL_STEP) {
    lines.push(`Not even ${POOL_STEP} tokens of ${least} KV cache fit beside the weights: use a model with a smaller KV cache (fewer layers or KV heads).`);
  } else {
    if (options.length === 0) options.push(`engine.pool_tokens = ${cells} with engine.kv_type = "${least}" (no context longer than that)`);
    lines.push(`Try ${options.join(', or ')}: in a config file, or as PENSIEVE_ENGINE_POOL_TOKENS / PENSIEVE_ENGINE_KV_TYPE.`);
  }
  lines.push('model.check_memory = false skips this check.');
  return lines.join('\n');
}

/** The plan in one paragraph: where, weights, KV type, pool, the longest context and the 32k sessions. */
export function renderPlan(plan: MemoryPlan): string {
  const device =
    plan.device === 'cpu'
      ? `CPU, ${gib(plan.memoryBytes)} of RAM (${gib(plan.reserveBytes)} kept for the system)`
      : `GPU ${plan.device}, ${gib(plan.memoryBytes)} free`;
  const limit = plan.maxContext < plan.poolTokens ? (plan.targetFrom === 'model' ? " (the model's trained context)" : ' (engine.max_context)') : '';
  const one = plan.sessionsAt32k === 1;
  const sessions = `${plan.sessionsAt32k} session${one ? '' : 's'} of ${SESSION_TOKENS} tokens fit${one ? 's' : ''} at once`;
  return (
    `memory plan: ${device}${plan.share ? `, ${plan.share} there` : ''}: weights ${gib(plan.weightsBytes)} + KV cache ${gib(plan.kvBytes)} ` +
    `(${plan.kvType}, a pool of ${plan.poolTokens} tokens shared by ${plan.slots} slots) + margin ${gib(plan.marginBytes)}. ` +
    `One session can grow to ${plan.maxContext} tokens${limit}; ${sessions}.`
  );
}
