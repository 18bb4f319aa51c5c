// The model architectures the built llama.cpp loads, read from its own source (the LLM_ARCH_NAMES table
// in src/llama-arch.cpp), so the list follows the pinned llama.cpp instead of going stale here.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../paths.js';

export const LLAMA_ARCH_SOURCE = join(projectRoot, 'native', 'deps', 'llama.cpp', 'src', 'llama-arch.cpp');

/** Entries of the table that are not loadable models. */
const NOT_MODELS = new Set(['clip', '(unknown)']);

let cached: Set<string> | undefined | null = null;

/** The names, or undefined when llama.cpp's source is not there (then nothing can be checked). */
export function llamaArchitectures(): Set<string> | undefined {
  if (cached === null) cached = readNames();
  return cached;
}

function readNames(): Set<string> | undefined {
  let text: string;
  try {
    text = readFileSync(LLAMA_ARCH_SOURCE, 'utf8');
  } catch {
    return undefined;
  }
  const table = /LLM_ARCH_NAMES\s*=\s*\{([\s\S]*?)\n\};/.exec(text)?.[1] ?? '';
  const names = [...table.matchAll(/\{\s*LLM_ARCH_\w+\s*,\s*"([^"]+)"\s*\}/g)].map((m) => m[1]!);
  const models = new Set(names.filter((n) => !NOT_MODELS.has(n)));
  return models.size > 0 ? models : undefined;
}
