// Starting the real engine in tests, and running a generation to its end.
import { Engine, type EngineLog, type GenerationEvent } from '../../src/engine/engine.js';
import type { EngineSettings, FinalStats, GenerateParams } from '../../src/engine/types.js';
import { sharedModelPath, tinyModelPath } from './models.js';

export interface TestModel {
  name: string;
  path: string;
}

/** The generated tiny model always; the shared real-shaped models when ../shared/models exists. */
export async function testModels(): Promise<TestModel[]> {
  const models: TestModel[] = [{ name: 'generated tiny qwen2', path: await tinyModelPath() }];
  for (const file of ['random-qwen2-tiny-10m-q8_0.gguf', 'random-qwen2-small-100m-q8_0.gguf']) {
    const path = sharedModelPath(file);
    if (path) models.push({ name: `shared ${file}`, path });
  }
  return models;
}

export function startEngine(modelPath: string, settings: Partial<EngineSettings> = {}, log?: EngineLog): Promise<Engine> {
  return Engine.start({
    modelPath,
    gpuLayers: 0,
    slots: 8,
    maxContext: 1024,
    poolTokens: 8 * 1024,
    kvType: 'f16',
    stepTokenBudget: 256,
    batchSize: 256,
    ubatchSize: 256,
    threads: 2,
    queueLength: 16,
    ringRecords: 64,
    streamIntervalMs: 20,
    // Off: the tests that compare a sequence's tokens alone, batched and cached rely on exact arithmetic,
    // which flash attention's kernels do not keep across batch shapes (config/pensieve.toml).
    flashAttention: 'off',
    hugePages: true,
    ...settings,
  }, log);
}

export interface Completed {
  text: string;
  tokens: number[];
  final: FinalStats;
}

export async function collect(events: AsyncIterable<GenerationEvent>): Promise<Completed> {
  let text = '';
  const tokens: number[] = [];
  for await (const event of events) {
    if (event.type === 'final') {
      const { type: _type, ...final } = event;
      return { text, tokens, final };
    }
    if (event.type === 'started') continue;
    text += event.text;
    if (event.token >= 0) tokens.push(event.token);
  }
  throw new Error('generation ended without a final record');
}

export function complete(engine: Engine, prompt: Int32Array, params: GenerateParams, signal?: AbortSignal): Promise<Completed> {
  return collect(engine.generate(prompt, params, signal));
}

/** Waits (up to two seconds) for every slot to be free: a cancellation reaches the engine a moment after the caller gives up. */
export async function slotsFreed(engine: Engine): Promise<number> {
  for (let i = 0; i < 100 && engine.status().slotsBusy > 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  return engine.status().slotsBusy;
}
