// A vision model for tests: the generated tiny model with a random-weight LLaVA-style projector
// (src/model/random-projector.ts) as wide as its embeddings, generated once under build/test-models.
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { projectRoot } from '../../src/paths.js';
import { MODEL_PRESETS } from '../../src/model/random-model.js';
import { TINY_PROJECTOR, writeRandomProjector } from '../../src/model/random-projector.js';
import { tinyModelPath } from './models.js';

/** Bump when the projector generator changes. */
const PROJECTOR_VERSION = 1;
let projector: Promise<string> | undefined;

/** The tiny model and its projector: an image is TINY_PROJECTOR's 64 tokens. */
export async function tinyVisionModel(): Promise<{ model: string; mmproj: string }> {
  projector ??= ensureProjector();
  return { model: await tinyModelPath(), mmproj: await projector };
}

async function ensureProjector(): Promise<string> {
  const dir = join(projectRoot, 'build', 'test-models', `vision-v${PROJECTOR_VERSION}`);
  const path = join(dir, 'tiny-mmproj.gguf');
  if (existsSync(path)) return path;
  await mkdir(dir, { recursive: true });
  const temp = `${path}.${process.pid}.${Date.now()}.tmp`; // written privately, then renamed (test files run in parallel)
  try {
    await writeRandomProjector({ outPath: temp, shape: TINY_PROJECTOR, textEmbd: MODEL_PRESETS.tiny.embd, seed: 1, weightStd: 0.4 });
    await rename(temp, path);
  } finally {
    await rm(temp, { force: true });
  }
  return path;
}
