// Model names: clients send Claude names (claude-opus-5-5); the alias table of the config maps them
// to the one loaded model. Also GET /v1/models and GET /v1/models/{id}.
import type { FastifyInstance } from 'fastify';
import { ApiError } from './errors.js';

/** The alias target that means "the loaded model". */
export const DEFAULT_TARGET = 'default';

/**
 * What `name` resolves to, in order:
 * 1. the loaded model's own id;
 * 2. an alias equal to `name`;
 * 3. the longest alias pattern ending in `*` that prefixes `name` (`*` alone matches all);
 * 4. no alias matched: `loadedId` when `fallback` is 'loaded' (any name is accepted), else undefined.
 * A matched alias yields `loadedId` when its target is "default" or the loaded id; a target naming
 * some other model yields undefined (it is not loaded), whatever `fallback` says.
 */
export function resolveModelName(
  name: string,
  aliases: Record<string, string>,
  loadedId: string,
  fallback: 'loaded' | 'none' = 'loaded',
): string | undefined {
  if (name === loadedId) return loadedId;
  let target = Object.hasOwn(aliases, name) && !name.endsWith('*') ? aliases[name] : undefined;
  if (target === undefined) {
    let longest = -1;
    for (const [pattern, to] of Object.entries(aliases)) {
      const prefix = pattern.slice(0, -1);
      if (pattern.endsWith('*') && name.startsWith(prefix) && prefix.length > longest) [target, longest] = [to, prefix.length];
    }
  }
  if (target === undefined) return fallback === 'loaded' ? loadedId : undefined;
  return target === DEFAULT_TARGET || target === loadedId ? loadedId : undefined;
}

export interface ModelInfo {
  id: string;
  displayName: string;
  /** RFC 3339, e.g. the model file's modification time. */
  createdAt: string;
}

const modelObject = (id: string, m: ModelInfo) => ({ type: 'model', id, display_name: m.displayName, created_at: m.createdAt });

/**
 * GET /v1/models lists the loaded model and each plain alias name (patterns with '*' cannot be
 * listed) that resolves to it; GET /v1/models/{id} answers for those and for any name a pattern
 * maps to it. Lookups here never fall back: an unknown id is a 404, so clients learn what exists.
 */
export function registerModelRoutes(app: FastifyInstance, info: () => ModelInfo, aliases: Record<string, string> = {}): void {
  app.get('/v1/models', async () => {
    const m = info();
    const names = Object.keys(aliases).filter((a) => !a.includes('*') && a !== m.id && resolveModelName(a, aliases, m.id, 'none'));
    const data = [m.id, ...names].map((id) => modelObject(id, m));
    return { data, has_more: false, first_id: data[0]!.id, last_id: data[data.length - 1]!.id };
  });
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    const m = info();
    const { id } = request.params;
    if (resolveModelName(id, aliases, m.id, 'none') === undefined)
      throw new ApiError(404, 'not_found_error', `model: ${id}`);
    return modelObject(id, m);
  });
}
