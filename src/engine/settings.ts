// The engine's settings from the configuration.
import { join, resolve } from 'node:path';
import type { PensieveConfig } from '../config.js';
import { physicalCores } from '../system.js';
import type { EngineSettings } from './types.js';

/**
 * The most tokens an image computed whole (one whose tokens attend to each other both ways: Gemma 3's) may
 * have: it must fit one step beside a decode token per slot, and one micro-batch.
 */
export function wholeImageLimit(settings: Pick<EngineSettings, 'stepTokenBudget' | 'slots' | 'ubatchSize'>): number {
  return Math.min(settings.stepTokenBudget - settings.slots, settings.ubatchSize);
}

/** The engine's settings from a config whose memory plan is resolved (see src/model/memory-plan.ts). */
export function engineSettings(config: PensieveConfig): EngineSettings {
  const e = config.engine;
  if (e.poolTokens <= 0 || e.maxContext <= 0 || e.kvType === 'auto') throw new Error('engineSettings: the memory plan is not resolved');
  return {
    modelPath: resolve(config.model.path),
    ...(config.model.mmproj !== '' && { mmproj: resolve(config.model.mmproj) }),
    gpuLayers: config.model.gpuLayers,
    slots: e.slots,
    maxContext: e.maxContext,
    poolTokens: e.poolTokens,
    kvType: e.kvType,
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
