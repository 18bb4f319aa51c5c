// The local models folder: hub files kept at <folder>/<owner>/<repo>/<file>, as the hub names them.
import { existsSync } from 'node:fs';
import { readdir, rm, rmdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { hubRefName, isProjectorFile, pickProjector, type HubRef } from './hub.js';

export interface LocalModel {
  /** `owner/repo/file`, usable as a model reference. */
  name: string;
  path: string;
  size: number;
  /** An interrupted download (`.partial`), which `pull` resumes and nothing loads. */
  partial: boolean;
}

/** Where a hub file is (or will be) kept. */
export function modelPath(folder: string, repo: string, file: string): string {
  const target = path.resolve(folder, repo, file);
  // parseHubRef rejects `..` segments; this keeps any other route out of the folder too.
  if (!target.startsWith(path.resolve(folder) + path.sep)) throw new Error(`${repo}/${file} is outside ${folder}`);
  return target;
}

/** Models under `folder`, sorted by name; an absent folder has none. */
export async function listLocalModels(folder: string): Promise<LocalModel[]> {
  if (!existsSync(folder)) return [];
  const models: LocalModel[] = [];
  for (const entry of await readdir(folder, { recursive: true, withFileTypes: true })) {
    const partial = /\.gguf\.partial$/i.test(entry.name);
    if (!entry.isFile() || !(partial || /\.gguf$/i.test(entry.name))) continue;
    // entry.parentPath is Node 20.12+; path is its older name.
    const file = path.join(entry.parentPath ?? entry.path, entry.name);
    const name = path.relative(folder, file).split(path.sep).join('/').replace(/\.partial$/, '');
    models.push({ name, path: file, size: (await stat(file)).size, partial });
  }
  return models.sort((a, b) => a.name.localeCompare(b.name) || Number(a.partial) - Number(b.partial));
}

/**
 * The local file of a hub reference: its file when named, else the one complete GGUF of the repo
 * folder (a repo pulled without a file name); undefined when not downloaded.
 */
export async function findLocalModel(folder: string, ref: HubRef): Promise<string | undefined> {
  if (ref.file) {
    const file = modelPath(folder, ref.repo, ref.file);
    return existsSync(file) ? file : undefined;
  }
  const inRepo = (await listLocalModels(folder)).filter((m) => !m.partial && m.name.startsWith(`${ref.repo}/`) && !isProjectorFile(m.name));
  if (inRepo.length > 1)
    throw new Error(`${ref.repo} has several local models; name one:\n  ${inRepo.map((m) => m.name).join('\n  ')}`);
  return inRepo[0]?.path;
}

/**
 * The projector kept beside a model downloaded into `folder` (`pensieve pull` fetches a repo's with its
 * model), if any; undefined for a model file elsewhere, where a projector beside it may not be its own.
 */
export async function findLocalProjector(folder: string, modelFile: string): Promise<string | undefined> {
  const root = path.resolve(folder) + path.sep;
  const dir = path.dirname(path.resolve(modelFile));
  if (!dir.startsWith(root) || !existsSync(dir)) return undefined;
  const file = pickProjector((await readdir(dir)).filter((f) => /\.gguf$/i.test(f)));
  return file && path.join(dir, file);
}

/**
 * Deletes a hub reference's local file and its partial download, then the folders left empty.
 * Returns the deleted paths (none when nothing was there).
 */
export async function removeLocalModel(folder: string, ref: HubRef): Promise<string[]> {
  const matches = (await listLocalModels(folder)).filter((m) =>
    ref.file ? m.name === hubRefName(ref) : m.name.startsWith(`${ref.repo}/`),
  );
  for (const m of matches) await rm(m.path);
  const root = path.resolve(folder);
  for (const dir of new Set(matches.map((m) => path.dirname(m.path)))) {
    for (let d = dir; d.startsWith(root + path.sep); d = path.dirname(d)) {
      if ((await readdir(d)).length > 0) break;
      await rmdir(d);
    }
  }
  return matches.map((m) => m.path);
}
