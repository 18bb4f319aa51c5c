// Typed access to the native addon (native/, built by scripts/build-native.mjs).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from './paths.js';

export interface ModelOptions {
  /** Load only the vocabulary (for tokenizing), not the weights. */
  vocabOnly?: boolean;
  /** Layers offloaded to the GPU when a GPU backend is built: -1 all, 0 none. */
  gpuLayers?: number;
  /** Map the model file (default) rather than read it into memory (which huge pages can back). */
  mmap?: boolean;
}

export interface ModelInfo {
  description: string;
  vocabSize: number;
  contextTrain: number;
  /** Tokens a sliding-window layer attends back (n_swa); 0 when the model has none. */
  slidingWindow: number;
  embeddingSize: number;
  layers: number;
  parameters: number;
  sizeBytes: number;
  bos: number;
  eos: number;
  addBos: boolean;
  eogTokens: Int32Array;
  chatTemplate: string | null;
}

export interface TokenPieces {
  /** The output bytes of every token, back to back. */
  bytes: Uint8Array;
  /** Token t's bytes are bytes[offsets[t] .. offsets[t + 1]). */
  offsets: Uint32Array;
  /** 1 for special tokens (control tokens such as end of turn), which are not plain text. */
  special: Uint8Array;
}

export interface NativeModel {
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  /**
   * The same tokens as tokenize(text, true, true), tokenized in pieces cut after special tokens; the tokens of
   * recent pieces are kept for the model file, in this process, so a prompt that repeats an earlier one's text
   * is tokenized only where it differs, whichever thread tokenized the earlier one.
   */
  tokenizePrompt(text: string): Int32Array;
  /** Where tokenizePrompt cuts text: the end (a UTF-8 byte offset) of each piece. */
  promptPieceEnds(text: string): Uint32Array;
  detokenize(tokens: Int32Array, renderSpecial: boolean): string;
  tokenPieces(): TokenPieces;
  info(): ModelInfo;
  meta(key: string): string | null;
  free(): void;
}

export interface DeviceInfo {
  name: string;
  description: string;
  type: 'cpu' | 'gpu' | 'igpu' | 'accel';
  free: number;
  total: number;
}

export interface ContextOptions {
  contextSize: number;
  batchSize: number;
  ubatchSize: number;
  sequences: number;
  threads: number;
  threadsBatch?: number;
  /** One pool of KV cells for all sequences instead of one stream per sequence (default false). */
  kvUnified?: boolean;
  /** KV cache element type of keys and values (default f16; quantized values need flash attention). */
  kvType?: 'f16' | 'q8_0' | 'q4_0';
  /** -1 auto (llama.cpp decides), 0 off, 1 on. */
  flashAttention?: -1 | 0 | 1;
}

export interface SamplerOptions {
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  /** Tokens never sampled. */
  banned?: Int32Array;
  grammar?: string;
  grammarLazy?: boolean;
  grammarTriggerPatterns?: string[];
  grammarTriggerTokens?: Int32Array;
  grammarPrefill?: Int32Array;
}

export interface NativeContext {
  configureSampler(seq: number, options: SamplerOptions): void;
  /**
   * One llama_decode over the first nTokens entries of the batch arrays; sampleAt[0..nSample) are the batch
   * indices to sample from afterwards (sample()). Returns llama_decode's status, 0 on success. When the
   * whole model is on a GPU, it returns once the step is queued there.
   */
  decode(tokens: Int32Array, positions: Int32Array, seqIds: Int32Array, nTokens: number,
    sampleAt: Int32Array, nSample: number): number;
  /**
   * One token per index the last decode named, in its order, into sampled (waiting for the step to finish).
   * Returns 0 on success.
   */
  sample(sampled: Int32Array): number;
  seqRemove(seq: number, p0: number, p1: number): boolean;
  seqCopy(src: number, dst: number, p0: number, p1: number): void;
  /** The smallest position held for the sequence in every layer (sliding-window layers drop old ones); -1 when empty. */
  seqPosMin(seq: number): number;
  seqPosMax(seq: number): number;
  /** The sequence's KV state, serialized by llama.cpp (llama_state_seq_get_data). */
  seqStateGet(seq: number): Buffer;
  /** The size of seqStateGet's result, found without copying the state. */
  seqStateSize(seq: number): number;
  /** Replaces the sequence's KV state; false, leaving it empty, when the data does not fit this context. */
  seqStateSet(seq: number, data: Uint8Array): boolean;
  info(): {
    contextSize: number; batchSize: number; ubatchSize: number; sequences: number;
    /** Every layer runs on a GPU: decode then returns before the step is computed. */
    wholeModelOnGpu: boolean;
  };
  free(): void;
}

/** A conversation rendered with the model's chat template, and how to generate and read the answer. */
export interface RenderedChat {
  prompt: string;
  format: number;
  formatName: string;
  /** GBNF that keeps tool calls valid; '' when none. */
  grammar: string;
  grammarLazy: boolean;
  grammarTriggerPatterns: string[];
  grammarTriggerTokens: Int32Array;
  grammarPrefill: Int32Array;
  /** Special tokens whose text the output parser must see (e.g. tool-call tags). */
  preservedTokens: Int32Array;
  /** The literal that opens tool calls in this format (the lazy grammar's trigger); '' when none. */
  toolCallStart: string;
  additionalStops: string[];
  generationPrompt: string;
  parser: string;
  supportsThinking: boolean;
}

export interface ChatRenderRequest {
  /** OpenAI chat format, which llama.cpp's chat layer reads. */
  messages: unknown[];
  tools?: unknown[];
  toolChoice?: 'auto' | 'required' | 'none';
  parallelToolCalls?: boolean;
  enableThinking?: boolean;
}

export interface NativeChatTemplates {
  /**
   * Renders a ChatRenderRequest (as JSON). Throws when the template cannot take it, and, with code 'ERR_GRAMMAR',
   * when llama.cpp would refuse the tool-call grammar or hang on its repetitions (then `reason` says how).
   */
  render(requestJson: string): RenderedChat;
  caps(): Record<string, boolean>;
}

export interface ChatDiff {
  reasoning?: string;
  content?: string;
  toolIndex?: number;
  toolName?: string;
  toolId?: string;
  toolArguments?: string;
}

export interface NativeChatParser {
  /** The changes since the last update, parsing all text so far; isPartial false for the last one. */
  update(textAdded: string, isPartial: boolean): ChatDiff[];
}

export interface ChatParserOptions {
  format: number;
  generationPrompt: string;
  parser: string;
  parseToolCalls: boolean;
}

/** What an image becomes in the prompt: the format's marker tokens, and chunks of image tokens. */
export type VisionPart = { text: Int32Array } | { chunk: string; tokens: number };

export interface VisionOptions {
  /** Encode on the GPU (when one is built). */
  gpu?: boolean;
  threads?: number;
  /** The most image tokens one decode takes: the engine's batch size (only the engine thread decodes). */
  batchSize?: number;
}

/** A model's multimodal projector (mmproj), shared by every thread of the process that opens it. */
export interface NativeVision {
  info(): { embeddingSize: number; nonCausal: boolean };
  /**
   * An image file's parts, `id` its content hash (image chunks are keyed by it); decodes and resizes it,
   * unless it was seen lately. Throws with code 'ERR_IMAGE' when the decoder cannot read it.
   */
  tokenize(bytes: Uint8Array, id: string): VisionPart[];
  /**
   * One llama_decode of image tokens: tokens [offsets[i], offsets[i] + counts[i]) of chunks[i], at positions
   * from positions[i], in sequence seqs[i], each chunk encoded first unless its embeddings are kept. Returns
   * llama_decode's status, -100 when a chunk is no longer kept.
   */
  decode(context: NativeContext, chunks: string[], offsets: Int32Array, counts: Int32Array, positions: Int32Array, seqs: Int32Array): number;
  /** Image chunks this object encoded, and the milliseconds it took. */
  stats(): { encoded: number; encodeMs: number };
}

interface Addon {
  Model: new (path: string, options?: ModelOptions) => NativeModel;
  Context: new (model: NativeModel, options: ContextOptions) => NativeContext;
  ChatTemplates: new (model: NativeModel, templateOverride?: string) => NativeChatTemplates;
  ChatParser: new (options: ChatParserOptions) => NativeChatParser;
  Vision: new (mmprojPath: string, modelPath: string, options?: VisionOptions) => NativeVision;
  systemInfo(): string;
  /** Whether ggml's large CPU buffers allocated from now on use transparent huge pages (false off Linux). */
  useHugePages(on: boolean): boolean;
  /**
   * Prompt pieces (Model.tokenizePrompt) served from the tokens kept for their model file, and pieces tokenized,
   * in this process: every thread's models of one file share the kept tokens.
   */
  promptPieceCounts(): { reused: number; tokenized: number };
  /** ggml's backend devices and the memory each reports (bytes; the CPU's is the system's). */
  devices(): DeviceInfo[];
}

let addon: Addon | undefined;

/** Loads the addon once per thread. */
export function loadAddon(): Addon {
  if (addon) return addon;
  const file = join(projectRoot, 'build', 'native', 'Release', 'pensieve.node');
  if (!existsSync(file)) {
    throw new Error(`native addon not built: ${file} is missing (run \`npm run build:native\`)`);
  }
  addon = createRequire(import.meta.url)(file) as Addon;
  return addon;
}
