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
}

export interface ModelInfo {
  description: string;
  vocabSize: number;
  contextTrain: number;
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
}

export interface NativeModel {
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  detokenize(tokens: Int32Array, renderSpecial: boolean): string;
  tokenPieces(): TokenPieces;
  info(): ModelInfo;
  meta(key: string): string | null;
  free(): void;
}

export interface ContextOptions {
  contextSize: number;
  batchSize: number;
  ubatchSize: number;
  sequences: number;
  threads: number;
  threadsBatch?: number;
  /** One KV buffer for all sequences instead of one stream per sequence (default false). */
  kvUnified?: boolean;
}

export interface SamplerOptions {
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  /** Tokens never sampled. */
  banned?: Int32Array;
}

export interface NativeContext {
  configureSampler(seq: number, options: SamplerOptions): void;
  /**
   * One llama_decode over the first nTokens entries of the batch arrays, then one sampled token per
   * entry of sampleAt[0..nSample) (batch indices) into sampled. Returns llama_decode's status, 0 on success.
   */
  decode(tokens: Int32Array, positions: Int32Array, seqIds: Int32Array, nTokens: number,
    sampleAt: Int32Array, nSample: number, sampled: Int32Array): number;
  seqRemove(seq: number, p0: number, p1: number): boolean;
  seqCopy(src: number, dst: number, p0: number, p1: number): void;
  seqPosMax(seq: number): number;
  info(): { contextSize: number; batchSize: number; ubatchSize: number; sequences: number };
  free(): void;
}

interface Addon {
  Model: new (path: string, options?: ModelOptions) => NativeModel;
  Context: new (model: NativeModel, options: ContextOptions) => NativeContext;
  systemInfo(): string;
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
