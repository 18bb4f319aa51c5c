// What the engine thread holds, described on request (Engine.inspect) for the dashboard: each request's
// state and tokens, and the prompt cache's prefixes in the slots and on disk. Built on the engine thread
// between steps, only when asked, so it costs nothing while nobody looks.
import type { SlotPrefixCache } from './prefix-cache.js';
import type { Scheduler } from './scheduler.js';
import type { Sequence } from './sequence.js';

/** queued: waits for a slot; loading: waits in its slot for a saved prefix read from disk; preempted: its KV state is set aside. */
export type RequestState = 'queued' | 'loading' | 'prefill' | 'decode' | 'preempted';

export interface InspectedRequest {
  /** The engine's id for the request (Generation.id). */
  id: number;
  state: RequestState;
  slot: number;
  promptTokens: number;
  cachedTokens: number;
  /** Prompt tokens computed so far (cached ones included). */
  prefilledTokens: number;
  generatedTokens: number;
}

/** A cached prefix: held by a free slot (in the KV pool), or saved on disk. */
export interface InspectedPrefix {
  tokens: number;
  bytes: number;
  /** Epoch milliseconds. */
  lastUsed: number;
  /** The slot holding it; absent for a prefix on disk. */
  slot?: number;
}

export interface EngineInspection {
  requests: InspectedRequest[];
  memoryPrefixes: InspectedPrefix[];
  diskPrefixes: InspectedPrefix[];
}

export interface InspectionSources {
  sequences: ReadonlyMap<number, Sequence>;
  scheduler: Scheduler;
  prefixCache: SlotPrefixCache;
  slots: number;
  /** Bytes of a slot's KV state (llama.cpp's count, without copying it). */
  stateBytes(slot: number): number;
  /** Prefixes saved on disk. */
  stored(): InspectedPrefix[];
}

function stateOf(seq: Sequence, scheduler: Scheduler): RequestState {
  if (seq.slot < 0) return 'queued';
  if (seq.setAside) return 'preempted';
  if (scheduler.isLoading(seq.id)) return 'loading';
  return seq.generated > 0 ? 'decode' : 'prefill';
}

/** Returns the engine's inspector. */
export function engineInspector(src: InspectionSources): () => EngineInspection {
  /** Per slot, the held tokens whose byte size was last asked of llama.cpp, and that size: asked again only when they change. */
  const sizes = new Map<number, { held: Int32Array; bytes: number }>();
  return () => inspect(src, sizes);
}

function inspect(src: InspectionSources, sizes: Map<number, { held: Int32Array; bytes: number }>): EngineInspection {
  const requests = [...src.sequences.values()].filter((seq) => !seq.done).map((seq): InspectedRequest => ({
    id: seq.id,
    state: stateOf(seq, src.scheduler),
    slot: seq.slot,
    promptTokens: seq.prompt.length,
    cachedTokens: seq.cached,
    prefilledTokens: Math.min(seq.computed, seq.prompt.length),
    generatedTokens: seq.generated,
  }));
  const memoryPrefixes: InspectedPrefix[] = [];
  for (let slot = 0; slot < src.slots; slot++) {
    const held = src.prefixCache.heldBy(slot);
    if (src.scheduler.isBusy(slot) || held.length === 0) continue;
    let size = sizes.get(slot);
    if (size?.held !== held) sizes.set(slot, (size = { held, bytes: src.stateBytes(slot) }));
    memoryPrefixes.push({ slot, tokens: held.length, bytes: size.bytes, lastUsed: src.prefixCache.lastUse(slot) });
  }
  return { requests, memoryPrefixes, diskPrefixes: src.stored() };
}
