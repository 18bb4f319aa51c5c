// The engine's settings from the configuration.
import { join, resolve } from 'node:path';
import type { PensieveConfig } from '../config.js';
import { physicalCores } from '../system.js';
import type { EngineSettings } from './types.js';

export function engineSettings(config: PensieveConfig): EngineSettings {
  const e = config.engine;
  return {
    modelPath: resolve(config.model.path),
    gpuLayers: config.model.gpuLayers,
    slots: e.slots,
    contextPerSlot: e.contextPerSlot,
    stepTokenBudget: e.stepTokenBudget,
    batchSize: e.batchSize,
    ubatchSize: e.ubatchSize,
    threads: e.threads > 0 ? e.threads : physicalCores(),
    queueLength: e.queueLength,
    ringRecords: 2 ** Math.ceil(Math.log2(e.ringRecords)),
    streamIntervalMs: e.streamIntervalMs,
    flashAttention: e.flashAttention,
    hugePages: e.hugePages,
    promptCache: config.cache.maxMb > 0 ? { folder: join(config.cache.folder, 'prompts'), maxBytes: config.cache.maxMb * 2 ** 20 } : undefined,
  };
}
