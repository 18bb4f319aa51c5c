// Gets a hub model into the models folder unless it is already there.
import { download, type DownloadResult } from './download.js';
import { authHeaders, listGgufFiles, pickGguf, pickProjector, resolveUrl, type HubOptions, type HubRef } from './hub.js';
import { findLocalModel, findLocalProjector, modelPath } from './store.js';

export interface PullOptions {
  folder: string;
  hub: HubOptions;
  /** Told the file (repo-relative) before its download starts. */
  onStart?: (file: string, url: string) => void;
  onProgress?: (done: number, total: number | undefined) => void;
  retryDelayMs?: number;
}

/** `projector`: the repo's multimodal projector, downloaded with the model (a vision model's). */
export type PullResult = ({ path: string; downloaded: false } | ({ downloaded: true } & DownloadResult)) & { projector?: string };

export async function pullModel(ref: HubRef, opts: PullOptions): Promise<PullResult> {
  const local = await findLocalModel(opts.folder, ref);
  if (local) {
    const projector = await findLocalProjector(opts.folder, local);
    return { path: local, downloaded: false, ...(projector && { projector }) };
  }
  // A named file needs no listing, but the listing says whether the repo has a projector.
  const files = ref.file ? await listGgufFiles(opts.hub, ref.repo).catch(() => []) : await listGgufFiles(opts.hub, ref.repo);
  const result = await fetchFile(ref.repo, ref.file ?? pickGguf(ref.repo, files), opts);
  const projectorFile = pickProjector(files);
  const projector = projectorFile && (await fetchFile(ref.repo, projectorFile, opts)).path;
  return { downloaded: true, ...result, ...(projector && { projector }) };
}

function fetchFile(repo: string, file: string, opts: PullOptions): Promise<DownloadResult> {
  const url = resolveUrl(opts.hub, repo, file);
  opts.onStart?.(file, url);
  return download({ url, dest: modelPath(opts.folder, repo, file), headers: authHeaders(opts.hub), onProgress: opts.onProgress, retryDelayMs: opts.retryDelayMs });
}
