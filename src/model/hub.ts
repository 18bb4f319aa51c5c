// Hugging Face model references: aliases, `owner/repo[/file.gguf]`, resolve URLs and repo listings.
import { fetch } from 'undici';
import { CATALOGUE, DEFAULT_ALIAS, LEGACY_ALIASES } from './catalogue.js';

/** The model when none is configured: the catalogue's default (README, Models, says why). */
export const DEFAULT_MODEL = DEFAULT_ALIAS;

/** Short names for hub files: the catalogue's (src/model/catalogue.ts), and older ones kept working. */
export const MODEL_ALIASES: Readonly<Record<string, string>> = {
  ...Object.fromEntries(CATALOGUE.map((e) => [e.alias, `${e.repo}/${e.file}`])),
  ...Object.fromEntries(Object.entries(LEGACY_ALIASES).map(([alias, { ref }]) => [alias, ref])),
};

export interface HubRef {
  /** `owner/name`. */
  repo: string;
  /** Path of a GGUF file in the repo; undefined: pick one from the repo's listing. */
  file?: string;
}

const NAME = /^[\w.-]+$/;
const isGguf = (name: string) => /\.gguf$/i.test(name);

/**
 * The hub reference that `text` names (after alias expansion), or undefined when it looks like a file
 * path: absolute, `./`-relative, `~`, backslashes, or two segments ending in .gguf (`models/x.gguf`).
 */
export function parseHubRef(text: string): HubRef | undefined {
  const expanded = MODEL_ALIASES[text] ?? text;
  if (/^[./~]|\\|:/.test(expanded)) return undefined;
  const [owner, name, ...rest] = expanded.split('/');
  if (!owner || !name || !NAME.test(owner) || !NAME.test(name) || name === '..' || owner === '..') return undefined;
  if (rest.length === 0) return isGguf(name) ? undefined : { repo: `${owner}/${name}` };
  if (rest.some((s) => s === '' || s === '.' || s === '..') || !isGguf(expanded)) return undefined;
  return { repo: `${owner}/${name}`, file: rest.join('/') };
}

export const hubRefName = (ref: HubRef): string => (ref.file ? `${ref.repo}/${ref.file}` : ref.repo);

export interface HubOptions {
  /** Base URL; `HF_ENDPOINT` or https://huggingface.co. */
  endpoint: string;
  /** `HF_TOKEN`, for gated and private repos. */
  token?: string;
}

export function hubOptions(env: NodeJS.ProcessEnv = process.env): HubOptions {
  return { endpoint: (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, ''), token: env.HF_TOKEN || undefined };
}

export const authHeaders = (hub: HubOptions): Record<string, string> =>
  hub.token ? { authorization: `Bearer ${hub.token}` } : {};

export function resolveUrl(hub: HubOptions, repo: string, file: string): string {
  return `${hub.endpoint}/${repo}/resolve/main/${file.split('/').map(encodeURIComponent).join('/')}`;
}

/** The GGUF files of a repo, from the hub's model API. */
export async function listGgufFiles(hub: HubOptions, repo: string): Promise<string[]> {
  const res = await fetch(`${hub.endpoint}/api/models/${repo}`, { headers: authHeaders(hub) });
  if (res.status === 401 || res.status === 403 || res.status === 404)
    throw new Error(`${repo}: no such repo on ${hub.endpoint}, or it is private or gated (set HF_TOKEN)`);
  if (!res.ok) throw new Error(`${repo}: the hub answered ${res.status} ${res.statusText}`);
  const body = (await res.json()) as { siblings?: { rfilename: string }[] };
  return (body.siblings ?? []).map((s) => s.rfilename).filter(isGguf);
}

/** A vision model's multimodal projector (mmproj GGUF), which repos keep beside the model's files. */
export const isProjectorFile = (file: string): boolean => /(^|[/_.-])mmproj/i.test(file);

/**
 * The repo's only GGUF, else its only Q4_K_M (the usual 4-bit choice); anything else needs a file name.
 * Projector files are not models.
 */
export function pickGguf(repo: string, allFiles: string[]): string {
  const files = allFiles.filter((f) => !isProjectorFile(f));
  if (files.length === 1) return files[0]!;
  const q4 = files.filter((f) => /q4_k_m/i.test(f));
  if (q4.length === 1) return q4[0]!;
  if (files.length === 0) throw new Error(`${repo} has no .gguf file`);
  throw new Error(`${repo} has several .gguf files; name one as ${repo}/<file>:\n  ${files.join('\n  ')}`);
}

/** The repo's projector, if it has one: of several, the f16 one (as llama.cpp's own repos ship), else bf16, else the first. */
export function pickProjector(files: string[]): string | undefined {
  const projectors = files.filter(isProjectorFile).sort();
  return projectors.find((f) => /f16/i.test(f) && !/bf16/i.test(f)) ?? projectors.find((f) => /bf16/i.test(f)) ?? projectors[0];
}
