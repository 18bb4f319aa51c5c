// Gets a hub model into the models folder unless it is already there.
import { download, type DownloadResult } from './download.js';
import { authHeaders, listGgufFiles, pickGguf, resolveUrl, type HubOptions, type HubRef } from './hub.js';
import { findLocalModel, modelPath } from './store.js';

export interface PullOptions {
  folder: string;
  hub: HubOptions;
  /** Told the file (repo-relative) before its download starts. */
  onStart?: (file: string, url: string) => void;
  onProgress?: (done: number, total: number | undefined) => void;
  retryDelayMs?: number;
}

export type PullResult = { path: string; downloaded: false } | ({ downloaded: true } & DownloadResult);

export async function pullModel(ref: HubRef, opts: PullOptions): Promise<PullResult> {
  const local = await findLocalModel(opts.folder, ref);
  if (local) return { path: local, downloaded: false };
  const file = ref.file ?? pickGguf(ref.repo, await listGgufFiles(opts.hub, ref.repo));
  const dest = modelPath(opts.folder, ref.repo, file);
  const url = resolveUrl(opts.hub, ref.repo, file);
  opts.onStart?.(file, url);
  const result = await download({
    url,
    dest,
    headers: authHeaders(opts.hub),
    onProgress: opts.onProgress,
    retryDelayMs: opts.retryDelayMs,
  });
  return { downloaded: true, ...result };
}
