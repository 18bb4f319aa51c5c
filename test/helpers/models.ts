// Model files for tests: llama.cpp's vocab-only GGUFs, a generated tiny model, and the shared models.
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { projectRoot } from '../../src/paths.js';
import { MODEL_PRESETS, writeRandomQwen2Model } from '../../src/model/random-model.js';

/** A vocab-only GGUF shipped with llama.cpp, e.g. 'qwen2' for models/ggml-vocab-qwen2.gguf. */
export function llamaVocabPath(name = 'qwen2'): string {
  return join(projectRoot, 'native', 'deps', 'llama.cpp', 'models', `ggml-vocab-${name}.gguf`);
}

let tinyModel: Promise<string> | undefined;
/**
 * Weights this large make the tiny model's output depend on its whole context: with the usual 0.02, 64 wide,
 * attention is nearly uniform and every prompt gives the same tokens, so a test comparing a cached answer
 * with a cold one could not fail.
 */
export const TINY_WEIGHT_STD = 0.4;

/**
 * A random-weight qwen2 model of the 'tiny' preset (seed 1), generated once and cached under
 * build/test-models/std<weight std>. Delete the file after changing the generator.
 */
export function tinyModelPath(): Promise<string> {
  tinyModel ??= ensureTinyModel();
  return tinyModel;
}

async function ensureTinyModel(): Promise<string> {
  const dir = join(projectRoot, 'build', 'test-models', `std${TINY_WEIGHT_STD}`);
  const path = join(dir, 'tiny-qwen2.gguf');
  if (existsSync(path)) return path;
  await mkdir(dir, { recursive: true });
  // Test files run in parallel processes: write privately, then rename, which is atomic, so no
  // process ever sees a partial file (and concurrent writers produce identical files).
  const temp = `${path}.${process.pid}.${Date.now()}.tmp`;
  try {
    await writeRandomQwen2Model({ vocabPath: llamaVocabPath('qwen2'), outPath: temp, shape: MODEL_PRESETS.tiny, seed: 1, weightStd: TINY_WEIGHT_STD });
    await rename(temp, path);
  } finally {
    await rm(temp, { force: true });
  }
  return path;
}

/** A model from the shared folder next to the repository (`../shared/models/`), if present. */
export function sharedModelPath(file: string): string | undefined {
  const path = join(projectRoot, '..', 'shared', 'models', file);
  return existsSync(path) ? path : undefined;
}
