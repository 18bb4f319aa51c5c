// The prompt-preparation pool: chat-template rendering and tokenization run in worker threads
// (piscina), so that a 20k-token prompt never blocks the main thread's event loop.
import { Piscina } from 'piscina';
import { fileURLToPath } from 'node:url';
import type { CountTokensRequest } from '../api/schemas.js';
import type { ApiErrorType } from '../api/errors.js';
import { ApiError } from '../api/errors.js';
import type { PreparedChat } from './renderer.js';
import type { EngineSettings } from '../engine/types.js';
import { wholeImageLimit } from '../engine/settings.js';
import { DEFAULT_IMAGE_OPTIONS, type ImageOptions } from '../api/images.js';
import { fetchImageUrls } from '../api/image-urls.js';

export interface VisionSettings {
  mmproj: string;
  gpu: boolean;
  threads: number;
  /** The most tokens of an image the engine computes whole (src/engine/settings.ts). */
  wholeImageTokens: number;
}

/** The projector of the engine's settings, run as the engine thread runs it (they share it). */
export function visionSettingsOf(settings: EngineSettings): VisionSettings | undefined {
  if (!settings.mmproj) return undefined;
  return { mmproj: settings.mmproj, gpu: settings.gpuLayers !== 0, threads: settings.threads, wholeImageTokens: wholeImageLimit(settings) };
}

export interface PrepareWorkerData {
  modelPath: string;
  templateFile?: string;
  images: ImageOptions;
  /** A vision model's projector (model.mmproj), and how it runs (as on the engine thread). */
  vision?: VisionSettings;
  /** Set when running from source: the TypeScript entry that scripts/tsx-worker.mjs loads. */
  tsxEntry?: string;
}

export interface PrepareTask {
  request: CountTokensRequest;
  /** Longest prompt accepted, in tokens; absent: any (count_tokens counts whatever it is sent). */
  maxTokens?: number;
}

export type PrepareResult =
  | ({ ok: true } & PreparedChat)
  | { ok: false; status: number; type: ApiErrorType; message: string };

export class PreparePool {
  private readonly pool: Piscina<PrepareTask, PrepareResult>;
  private readonly images: ImageOptions;

  /** `images`: how images are handled (default: noted, up to Anthropic's 5 MiB). */
  constructor(options: { modelPath: string; templateFile?: string; threads: number; images?: ImageOptions; vision?: VisionSettings }) {
    const fromSource = import.meta.url.endsWith('.ts');
    const entry = new URL('../../workers/prepare' + (fromSource ? '.ts' : '.js'), import.meta.url);
    this.images = options.images ?? DEFAULT_IMAGE_OPTIONS;
    const workerData: PrepareWorkerData = { modelPath: options.modelPath, templateFile: options.templateFile, images: this.images, vision: options.vision };
    if (fromSource) workerData.tsxEntry = entry.href;
    this.pool = new Piscina({
      filename: fromSource ? fileURLToPath(new URL('../../scripts/tsx-worker.mjs', import.meta.url)) : fileURLToPath(entry),
      workerData,
      minThreads: 1,
      maxThreads: options.threads,
      idleTimeout: 60_000,
    });
  }

  /**
   * Renders and tokenizes a request (its image URLs fetched first, when that is on); a request the template
   * cannot take, an image that cannot be used, or a prompt that its length alone proves longer than
   * `maxTokens`, is an ApiError (400).
   */
  async prepare(request: CountTokensRequest, maxTokens?: number): Promise<PreparedChat> {
    await fetchImageUrls(request, this.images);
    const result = await this.pool.run({ request, maxTokens });
    if (!result.ok) throw new ApiError(result.status, result.type, result.message);
    return result;
  }

  close(): Promise<void> {
    return this.pool.destroy();
  }
}
