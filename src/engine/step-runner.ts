// Runs a step plan as ONE llama_decode over the next token of every generating sequence and the step's
// prompt chunks, then samples and hands each sampled token back. With overlapping steps (worth it only
// where llama_decode returns before the step is done: the whole model on a GPU), a step's tokens are
// published while the next step computes. Prompt chunks of image tokens (a vision model's) go into a decode
// of their own, of embeddings, just before: the scheduler never mixes text and image tokens in one chunk,
// and a step holds at most one chunk of each sequence, so the two decodes' order does not matter.
import type { NativeContext, NativeVision } from '../native.js';
import type { DecodeEntry, PrefillEntry, StepPlan } from './scheduler.js';
import type { Sequence } from './sequence.js';
import type { PromptImage } from './types.js';

export interface StepHandlers {
  /** llama.cpp took the step: its tokens are computed (or being computed). */
  launched(plan: StepPlan): void;
  /** A sampled token, taken before its text is published: the next step needs it. */
  take(seq: Sequence, token: number): void;
  /** Whether a taken token ends its sequence whatever its text: it is published at once. */
  ends(seq: Sequence, token: number): boolean;
  /** Writes a taken token's text, and ends its sequence where the token does. */
  publish(seq: Sequence, token: number): void;
  /** A sequence of a step that llama.cpp refused or that failed; the others go on. */
  fail(seq: Sequence): void;
}

/** The image whose tokens are at prompt position `at`, if any. */
function imageAt(seq: Sequence, at: number): PromptImage | undefined {
  return seq.params.images?.find((image) => at >= image.start && at < image.start + image.count);
}

/** A step's image chunks, as Vision.decode takes them (arrays reused every step). */
class ImageBatch {
  chunks: string[] = [];
  /** The requests whose chunks these are. */
  ids: number[] = [];
  readonly offsets: Int32Array;
  readonly counts: Int32Array;
  readonly positions: Int32Array;
  readonly seqIds: Int32Array;

  constructor(capacity: number) {
    this.offsets = new Int32Array(capacity);
    this.counts = new Int32Array(capacity);
    this.positions = new Int32Array(capacity);
    this.seqIds = new Int32Array(capacity);
  }

  add(image: PromptImage, entry: PrefillEntry): void {
    const i = this.chunks.length;
    this.chunks.push(image.chunk);
    this.ids.push(entry.id);
    this.offsets[i] = entry.start - image.start;
    this.counts[i] = entry.count;
    this.positions[i] = entry.start;
    this.seqIds[i] = entry.slot;
  }

  /** One llama_decode of the image chunks; the requests whose chunks failed (all of them, when one does). */
  decode(vision: NativeVision | undefined, context: NativeContext): number[] {
    const n = this.chunks.length;
    if (n === 0) return [];
    const status = vision ? vision.decode(context, this.chunks, this.offsets.subarray(0, n), this.counts.subarray(0, n), this.positions.subarray(0, n), this.seqIds.subarray(0, n)) : -1;
    const failed = status === 0 ? [] : this.ids;
    this.chunks = [];
    this.ids = [];
    return failed;
  }
}

/** Tokens taken from a step and not yet published. */
class TakenTokens {
  readonly seqs: Sequence[];
  readonly tokens: Int32Array;
  count = 0;

  constructor(capacity: number) {
    this.seqs = new Array(capacity);
    this.tokens = new Int32Array(capacity);
  }

  add(seq: Sequence, token: number): void {
    this.seqs[this.count] = seq;
    this.tokens[this.count++] = token;
  }

  publishAll(publish: (seq: Sequence, token: number) => void): void {
    for (let i = 0; i < this.count; i++) publish(this.seqs[i], this.tokens[i]);
    this.seqs.fill(undefined as unknown as Sequence, 0, this.count);
    this.count = 0;
  }
}

export class StepRunner {
  // The batch arrays, reused every step.
  private readonly tokens: Int32Array;
  private readonly positions: Int32Array;
  private readonly seqIds: Int32Array;
  private readonly sampleAt: Int32Array;
  private readonly sampled: Int32Array;
  private readonly sampledFor: Sequence[];
  /** Two lists: one fills while the other is published. */
  private unpublished: TakenTokens;
  private spare: TakenTokens;
  private readonly images: ImageBatch;

  constructor(
    private readonly context: NativeContext,
    size: { batchSize: number; slots: number },
    private readonly overlap: boolean,
    private readonly sequences: ReadonlyMap<number, Sequence>,
    private readonly handlers: StepHandlers,
    /** A vision model's projector: decodes the image tokens of prompts. */
    private readonly vision?: NativeVision,
  ) {
    this.tokens = new Int32Array(size.batchSize);
    this.positions = new Int32Array(size.batchSize);
    this.seqIds = new Int32Array(size.batchSize);
    this.sampleAt = new Int32Array(size.slots);
    this.sampled = new Int32Array(size.slots);
    this.sampledFor = new Array(size.slots);
    this.unpublished = new TakenTokens(size.slots);
    this.spare = new TakenTokens(size.slots);
    this.images = new ImageBatch(size.slots);
  }

  /** Runs a step; with overlap, the previous step's tokens are published while this one computes. */
  run(plan: StepPlan): void {
    const toSample = this.launch(plan);
    const earlier = this.unpublished;
    this.unpublished = this.spare;
    this.spare = earlier;
    earlier.publishAll(this.handlers.publish);
    this.take(plan, toSample);
  }

  /** Publishes the tokens held back for the next step (when there is none). */
  flush(): void {
    this.unpublished.publishAll(this.handlers.publish);
  }

  /** Starts the step: one llama_decode over the plan's tokens. Returns the tokens it will sample, -1 when refused. */
  private launch(plan: StepPlan): number {
    let n = 0;
    let nSample = 0;
    const entries: Array<DecodeEntry | PrefillEntry> = [...plan.decode, ...plan.prefill];
    for (const entry of entries) {
      const seq = this.sequences.get(entry.id)!;
      if (!('start' in entry)) {
        this.tokens[n] = seq.lastToken;
        this.positions[n] = seq.prompt.length + seq.generated - 1;
        this.seqIds[n] = entry.slot;
        this.sampleAt[nSample] = n;
        this.sampledFor[nSample++] = seq;
        n++;
        continue;
      }
      const image = seq.params.images && imageAt(seq, entry.start);
      if (image) {
        this.images.add(image, entry);
        continue;
      }
      this.tokens.set(seq.prompt.subarray(entry.start, entry.start + entry.count), n);
      for (let i = 0; i < entry.count; i++) {
        this.positions[n + i] = entry.start + i;
        this.seqIds[n + i] = entry.slot;
      }
      n += entry.count;
      if (entry.last) {
        this.sampleAt[nSample] = n - 1;
        this.sampledFor[nSample++] = seq;
      }
    }
    this.sampledFor.fill(undefined as unknown as Sequence, nSample);
    // Images that could not be decoded (no longer kept, or no KV room) end their requests only; the step goes on.
    const failed = this.images.decode(this.vision, this.context);
    if (failed.length > 0) {
      for (const id of failed) this.handlers.fail(this.sequences.get(id)!);
      plan = { ...plan, prefill: plan.prefill.filter((p) => !failed.includes(p.id)) };
      plan.tokens = plan.decode.length + plan.prefill.reduce((sum, p) => sum + p.count, 0);
    }
    if (n > 0 && this.context.decode(this.tokens, this.positions, this.seqIds, n, this.sampleAt, nSample) !== 0) {
      this.fail(plan); // llama.cpp could not place the batch (no KV room, or aborted)
      return -1;
    }
    this.handlers.launched(plan);
    return nSample;
  }

  /**
   * Waits for the launched step and takes its tokens. A token that ends its sequence is published at once
   * (so the sequence is not in the next step); with overlap, the others wait for the next launch.
   */
  private take(plan: StepPlan, count: number): void {
    if (count <= 0) return;
    if (this.context.sample(this.sampled) !== 0) return this.fail(plan);
    for (let i = 0; i < count; i++) {
      const seq = this.sampledFor[i];
      const token = this.sampled[i];
      if (seq.done) continue; // ended (by a stop sequence) while this step computed: the token is not its
      this.handlers.take(seq, token);
      if (this.overlap && !this.handlers.ends(seq, token)) this.unpublished.add(seq, token);
      else this.handlers.publish(seq, token);
    }
  }

  private fail(plan: StepPlan): void {
    for (const entry of [...plan.decode, ...plan.prefill]) {
      const seq = this.sequences.get(entry.id);
      if (seq) this.handlers.fail(seq);
    }
  }
}
