// The engine's live status: int32 words in a SharedArrayBuffer, written by the engine thread every
// step and read by the main thread without a message round trip.
export enum StatusWord {
  SlotsBusy = 0,
  Queued = 1,
  /** Counters since start (wrap at 2^31). */
  Steps = 2,
  DecodedTokens = 3,
  PrefilledTokens = 4,
  /** Prompt tokens of admitted requests: all of them, and those served from the prefix cache. */
  PromptTokens = 5,
  CachedPromptTokens = 6,
  /** Requests admitted into a slot. */
  Admitted = 7,
  /** KV pool cells in use (running sequences and cached prefixes). */
  KvCellsUsed = 8,
  /** Requests preempted (their state set aside) to make room in the pool. */
  Preempted = 9,
  /** Milliseconds of steps spent on prompt tokens (each step's time shared by its tokens). */
  PrefillMs = 10,
}

export const STATUS_WORDS = 11;

export interface EngineStatus {
  slotsBusy: number;
  queued: number;
  steps: number;
  decodedTokens: number;
  prefilledTokens: number;
  promptTokens: number;
  cachedPromptTokens: number;
  admitted: number;
  kvCellsUsed: number;
  preempted: number;
  prefillMs: number;
}

export function readStatus(words: Int32Array): EngineStatus {
  return {
    slotsBusy: Atomics.load(words, StatusWord.SlotsBusy),
    queued: Atomics.load(words, StatusWord.Queued),
    steps: Atomics.load(words, StatusWord.Steps),
    decodedTokens: Atomics.load(words, StatusWord.DecodedTokens),
    prefilledTokens: Atomics.load(words, StatusWord.PrefilledTokens),
    promptTokens: Atomics.load(words, StatusWord.PromptTokens),
    cachedPromptTokens: Atomics.load(words, StatusWord.CachedPromptTokens),
    admitted: Atomics.load(words, StatusWord.Admitted),
    kvCellsUsed: Atomics.load(words, StatusWord.KvCellsUsed),
    preempted: Atomics.load(words, StatusWord.Preempted),
    prefillMs: Atomics.load(words, StatusWord.PrefillMs),
  };
}
