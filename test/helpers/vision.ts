// Vision models for tests: the generated tiny model with a random-weight projector (src/model/random-projector.ts)
// as wide as its embeddings, LLaVA-style (64 tokens an image) or Gemma 3-style (16 tokens, attending both
// ways), generated once under build/test-models.
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { projectRoot } from '../../src/paths.js';
import { MODEL_PRESETS } from '../../src/model/random-model.js';
import { TINY_GEMMA3_PROJECTOR, TINY_PROJECTOR, writeRandomProjector, type ProjectorShape } from '../../src/model/random-projector.js';
import { tinyModelPath } from './models.js';

/** Bump when the projector generator changes. */
const PROJECTOR_VERSION = 2;
const SHAPES: Record<ProjectorShape['type'], ProjectorShape> = { mlp: TINY_PROJECTOR, gemma3: TINY_GEMMA3_PROJECTOR };
const projectors = new Map<ProjectorShape['type'], Promise<string>>();

/** The tiny model and a projector of `type` for it. */
export async function tinyVisionModel(type: ProjectorShape['type'] = 'mlp'): Promise<{ model: string; mmproj: string }> {
  let projector = projectors.get(type);
  if (!projector) projectors.set(type, (projector = ensureProjector(SHAPES[type])));
  return { model: await tinyModelPath(), mmproj: await projector };
}

async function ensureProjector(shape: ProjectorShape): Promise<string> {
  const dir = join(projectRoot, 'build', 'test-models', `vision-v${PROJECTOR_VERSION}`);
  const path = join(dir, `tiny-mmproj-${shape.type}.gguf`);
  if (existsSync(path)) return path;
  await mkdir(dir, { recursive: true });
  const temp = `${path}.${process.pid}.${Date.now()}.tmp`; // written privately, then renamed (test files run in parallel)
  try {
    await writeRandomProjector({ outPath: temp, shape, textEmbd: MODEL_PRESETS.tiny.embd, seed: 1, weightStd: 0.4 });
    await rename(temp, path);
  } finally {
    await rm(temp, { force: true });
  }
  return path;
}
