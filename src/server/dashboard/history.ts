// The dashboard's memory of the message requests: those in flight, a ring of the last few hundred that ended,
// per-session prompt-cache hits, and the last ten minutes as series (per-second rates sampled while a page
// is open; each request's time to first token and cache hit as it ends). Plain data, no I/O: the route
// feeds it and the snapshot reads it.

/** Where a request is: the engine's states (src/engine/inspection.ts) while it runs, then done. */
export type RecordState = 'received' | 'queued' | 'loading' | 'prefill' | 'decode' | 'preempted' | 'done';

export interface RequestRecord {
  /** The HTTP request's id (its request-id header). */
  id: string;
  /** When it arrived, epoch milliseconds. */
  at: number;
  /** x-claude-code-session-id, when the client sends one. */
  session?: string;
  /** The model name the request asked for. */
  model?: string;
  stream: boolean;
  state: RecordState;
  /** The engine's id of its generation, once submitted. */
  engineId?: number;
  promptTokens: number;
  cachedTokens: number;
  outputTokens: number;
  /** From arrival to the first generated token. */
  ttftMs?: number;
  /** From arrival to the end of the response. */
  durationMs?: number;
  /** The API's stop reason, or the engine's when the answer was cut short (cancelled, error). */
  stopReason?: string;
  /** The HTTP status; 499: the client left before the response ended. */
  status?: number;
  /** Why it failed: an error response's message, or a stream that ended with an error event. */
  error?: string;
  /** The start of the last user message, only with log.prompts. */
  preview?: string;
}

export interface SessionHits {
  session: string;
  requests: number;
  promptTokens: number;
  cachedTokens: number;
  lastAt: number;
}

/** One second of the engine, sampled while a page is open. */
export interface RateSample {
  at: number;
  generatedPerSecond: number;
  prefilledPerSecond: number;
  rssBytes: number;
  kvCellsUsed: number;
}

/** A request as it ended, for the per-request charts. */
export interface RequestPoint {
  at: number;
  ttftMs: number | null;
  /** Cached prompt tokens over prompt tokens; null when it had no prompt in the engine. */
  hitRate: number | null;
}

/** Running totals the rates come from (the engine's status words, which wrap at 2^31). */
export interface Counters {
  decodedTokens: number;
  prefilledTokens: number;
  kvCellsUsed: number;
  rssBytes: number;
}

export interface HistoryOptions {
  /** Ended requests kept for the table. */
  recent?: number;
  /** How far back the series go. */
  windowMs?: number;
  /** Sessions whose hits are kept (the most recently active). */
  sessions?: number;
}

/** Samples further apart than this do not make a rate: no page was open in between. */
const MAX_SAMPLE_GAP_MS = 5000;
/** At most this many request points, however busy the window was. */
const MAX_POINTS = 5000;

export class RequestHistory {
  readonly windowMs: number;
  private readonly capacity: number;
  private readonly sessionCapacity: number;
  private readonly live = new Map<string, RequestRecord>();
  /** Ring of ended requests; `next` is where the next one goes. */
  private readonly ended: RequestRecord[] = [];
  private next = 0;
  private readonly hits = new Map<string, SessionHits>();
  private readonly rates: RateSample[] = [];
  private readonly points: RequestPoint[] = [];
  private last?: { at: number; counters: Counters };

  constructor(options: HistoryOptions = {}) {
    this.capacity = options.recent ?? 300;
    this.windowMs = options.windowMs ?? 10 * 60_000;
    this.sessionCapacity = options.sessions ?? 50;
  }

  /** A request arrived; the returned record is updated in place until end(). */
  begin(id: string, at: number, stream = false): RequestRecord {
    const record: RequestRecord = { id, at, stream, state: 'received', promptTokens: 0, cachedTokens: 0, outputTokens: 0 };
    this.live.set(id, record);
    return record;
  }

  /** The request's response ended (or its client left): it moves to the recent ring and the charts. */
  end(record: RequestRecord, at: number, status: number): void {
    if (!this.live.delete(record.id)) return;
    record.state = 'done';
    record.status = status;
    record.durationMs = at - record.at;
    if (this.ended.length < this.capacity) this.ended.push(record);
    else this.ended[this.next] = record;
    this.next = (this.next + 1) % this.capacity;
    if (record.promptTokens > 0) {
      this.points.push({ at, ttftMs: record.ttftMs ?? null, hitRate: record.cachedTokens / record.promptTokens });
      if (this.points.length > MAX_POINTS) this.points.shift();
      if (record.session !== undefined) this.countHits(record, at);
    }
    this.trim(at);
  }

  private countHits(record: RequestRecord, at: number): void {
    const session = record.session!;
    const hits = this.hits.get(session) ?? { session, requests: 0, promptTokens: 0, cachedTokens: 0, lastAt: at };
    hits.requests++;
    hits.promptTokens += record.promptTokens;
    hits.cachedTokens += record.cachedTokens;
    hits.lastAt = at;
    this.hits.delete(session); // re-inserted last: the map stays in order of activity
    this.hits.set(session, hits);
    if (this.hits.size > this.sessionCapacity) this.hits.delete(this.hits.keys().next().value!);
  }

  /** One second's sample of the engine's counters; the first after a gap only sets the baseline. */
  sample(at: number, counters: Counters): void {
    const last = this.last;
    this.last = { at, counters };
    this.trim(at);
    if (!last || at - last.at > MAX_SAMPLE_GAP_MS || at <= last.at) return;
    const seconds = (at - last.at) / 1000;
    this.rates.push({
      at,
      generatedPerSecond: ((counters.decodedTokens - last.counters.decodedTokens) >>> 0) / seconds,
      prefilledPerSecond: ((counters.prefilledTokens - last.counters.prefilledTokens) >>> 0) / seconds,
      rssBytes: counters.rssBytes,
      kvCellsUsed: counters.kvCellsUsed,
    });
  }

  /** Drops what fell out of the window. */
  private trim(at: number): void {
    const from = at - this.windowMs;
    while (this.rates.length > 0 && this.rates[0].at < from) this.rates.shift();
    while (this.points.length > 0 && this.points[0].at < from) this.points.shift();
  }

  /** Requests in flight, oldest first. */
  inFlight(): RequestRecord[] {
    return [...this.live.values()];
  }

  /** Ended requests, newest first. */
  recent(): RequestRecord[] {
    const older = this.ended.slice(this.next);
    const newer = this.ended.slice(0, this.next);
    return [...older, ...newer].reverse();
  }

  /** Per-session prompt-cache hits, most recently active first. */
  sessions(): SessionHits[] {
    return [...this.hits.values()].reverse();
  }

  /** The last window's per-second samples, oldest first. */
  rateSeries(): readonly RateSample[] {
    return this.rates;
  }

  /** The last window's ended requests with a prompt, oldest first. */
  requestSeries(): readonly RequestPoint[] {
    return this.points;
  }
}
