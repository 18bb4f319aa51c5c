// A request as the engine thread tracks it, from submission to its last record.
import type { RingWriter } from './ring.js';
import type { TextStream } from './text-stream.js';
import type { FinalStats, GenerateParams } from './types.js';

/** A record for the request's ring: started (with its cached prompt tokens), a token's text, or the final one. */
export type OutputRecord = { cachedPromptTokens: number } | { token: number; text: Uint8Array } | FinalStats;

export interface Sequence {
  id: number;
  prompt: Int32Array;
  params: GenerateParams;
  maxTokens: number;
  ring: RingWriter;
  text: TextStream;
  /** Special tokens whose text this request shows. */
  shownSpecial: Set<number>;
  slot: number;
  /** Records the ring had no room for yet; while any are here, the sequence is paused. */
  backlog: OutputRecord[];
  lastToken: number;
  generated: number;
  /** Every generated token (the KV cache holds the prompt, then these but the last). */
  output: number[];
  /** Tokens of prompt + output whose KV state is computed, in its slot. */
  computed: number;
  /** Prompt tokens that were already in the slot (a cached prefix). */
  cached: number;
  /** While preempted: its KV state, out of the pool. */
  setAside?: Buffer;
  submittedAt: number;
  admittedAt: number;
  firstTokenAt: number;
  /** Whether its started record was emitted. */
  started: boolean;
  done: boolean;
}

/** The tokens whose KV state the sequence's slot holds. */
export function heldTokens(seq: Sequence): Int32Array {
  const held = new Int32Array(seq.computed);
  held.set(seq.prompt.subarray(0, Math.min(seq.computed, seq.prompt.length)));
  if (seq.computed > seq.prompt.length) held.set(seq.output.slice(0, seq.computed - seq.prompt.length), seq.prompt.length);
  return held;
}
