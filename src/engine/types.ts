// Types shared by the engine's main-thread API, the engine thread and the scheduler.
import type { KvType } from '../config.js';

/** Why a generation ended. `overloaded`: refused because the queue was full. */
export type StopReason = 'end_turn' | 'max_tokens' | 'stop_sequence' | 'cancelled' | 'overloaded' | 'error';

export interface GenerateParams {
  /** Most tokens to generate; also bounded by what maxContext leaves after the prompt. */
  maxTokens: number;
  /** <= 0: greedy and deterministic. */
  temperature?: number;
  topP?: number;
  /** <= 0: no top-k cut. */
  topK?: number;
  seed?: number;
  /** Never end on the model's end-of-generation tokens (they are not sampled); for benchmarks. */
  ignoreEos?: boolean;
  /** Matched on the generated text, across token boundaries; never emitted. */
  stopSequences?: string[];
  /** A GBNF grammar the output must follow (e.g. tool-call JSON). */
  grammar?: GrammarSettings;
  /** Special tokens whose text is emitted; other special tokens are not part of the text. */
  shownSpecialTokens?: Int32Array;
  /** The prompt's image tokens, in order (a vision model's). */
  images?: PromptImage[];
}

/**
 * Image tokens in a prompt: positions [start, start + count) hold image chunk `chunk`'s embeddings (its
 * tokens there are placeholders: negative ids derived from the chunk's key, so that prefixes match by content).
 */
export interface PromptImage {
  start: number;
  count: number;
  /** The chunk's key in the projector (src/chat/vision-renderer.ts). */
  chunk: string;
}

export interface GrammarSettings {
  gbnf: string;
  /** Off until one of the triggers appears in the output. */
  lazy: boolean;
  triggerPatterns: string[];
  triggerTokens: Int32Array;
  /** Tokens at the end of the prompt that the grammar must accept first. */
  prefill: Int32Array;
}

export interface FinalStats {
  stopReason: StopReason;
  /** Index into stopSequences of the one that matched, -1 when none. */
  stopSequenceIndex: number;
  promptTokens: number;
  /** Prompt tokens served from the KV cache instead of computed. */
  cachedPromptTokens: number;
  generatedTokens: number;
  /** From submission to admission into a slot. */
  queueMs: number;
  /** From admission to the first generated token. */
  prefillMs: number;
  /** From the first generated token to the last. */
  decodeMs: number;
}

export interface EngineSettings {
  modelPath: string;
  /** A vision model's multimodal projector (mmproj GGUF); absent: the model sees no images. */
  mmproj?: string;
  gpuLayers: number;
  /** Sequences generated at once; each has its own slot (a KV sequence id), all share the pool's cells. */
  slots: number;
  /** Longest context (prompt + output) of one sequence: prompts are refused against it. At most poolTokens. */
  maxContext: number;
  /** KV cells in the pool shared by all sequences. */
  poolTokens: number;
  /** KV cache element type (keys and values). */
  kvType: KvType;
  /** Most tokens (decode + prefill chunks) in one llama_decode step. */
  stepTokenBudget: number;
  batchSize: number;
  ubatchSize: number;
  threads: number;
  /** Requests that may wait for a slot; beyond that, requests are refused as overloaded. */
  queueLength: number;
  /** Token ring capacity per request, in records (a power of two). */
  ringRecords: number;
  /** Least time between wake-ups of the readers while tokens stream (first and last records go at once). */
  streamIntervalMs: number;
  /** llama.cpp's flash attention (see config/pensieve.toml). */
  flashAttention: 'off' | 'on' | 'auto';
  /** Read the model into memory of transparent huge pages, the KV cache and buffers too (Linux only). */
  hugePages: boolean;
  /**
   * Publish a step's tokens (text, stop sequences, rings) while the next step computes. Absent: when the whole
   * model runs on a GPU, where llama_decode returns before the step is done (on the CPU it would only hold each
   * token back by one step).
   */
  overlapSteps?: boolean;
  /** Where cached prefixes are kept across restarts, and the most bytes they may take; absent: not kept. */
  promptCache?: { folder: string; maxBytes: number };
}

/** Messages from the main thread to the engine thread. */
export type EngineCommand =
  | { type: 'submit'; id: number; prompt: Int32Array; params: GenerateParams; ring: SharedArrayBuffer; submittedAt: number }
  /** abandon: the reader is gone, so records still waiting for ring room are dropped. */
  | { type: 'cancel'; id: number; abandon: boolean }
  /** Asks for an EngineInspection (answered with an `inspection` message). */
  | { type: 'inspect' }
  | { type: 'shutdown' };
