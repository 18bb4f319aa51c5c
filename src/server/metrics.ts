// Prometheus metrics (GET /metrics): HTTP requests by route and status, per-request latencies from the
// message route, and the engine's live status, read on each scrape.
import type { FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Engine, GenerationEvent } from '../engine/engine.js';
import type { EngineStatus } from '../engine/status.js';
import type { RequestMetrics } from '../api/messages.js';
import { loadAddon } from '../native.js';

/** Engine counters exported as Prometheus counters: metric name, help, status field. */
const ENGINE_COUNTERS: [string, string, keyof EngineStatus][] = [
  ['pensieve_generated_tokens_total', 'Tokens generated (decoded) by the engine.', 'decodedTokens'],
  ['pensieve_prefilled_tokens_total', 'Prompt tokens computed (prefilled) by the engine.', 'prefilledTokens'],
  ['pensieve_prompt_tokens_total', 'Prompt tokens of requests admitted into a slot.', 'promptTokens'],
  ['pensieve_cached_prompt_tokens_total', 'Prompt tokens served from the prompt (prefix) cache instead of computed.', 'cachedPromptTokens'],
  ['pensieve_admitted_requests_total', 'Requests admitted into a slot.', 'admitted'],
  ['pensieve_engine_steps_total', 'Engine steps (llama_decode calls).', 'steps'],
  ['pensieve_preempted_total', 'Running requests preempted (KV state set aside, resumed later) to make room in the KV pool.', 'preempted'],
];

/** Prompt preparation's tokenization in kept pieces (Model.tokenizePrompt), counted by the addon for the process. */
const PROMPT_PIECE_COUNTERS: [string, string, 'reused' | 'tokenized'][] = [
  ['pensieve_prompt_pieces_reused_total', 'Prompt pieces whose tokens were kept from an earlier request.', 'reused'],
  ['pensieve_prompt_pieces_tokenized_total', 'Prompt pieces tokenized.', 'tokenized'],
];

export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'method' | 'route' | 'status'>;
  private readonly timeToFirstToken: Histogram;
  private readonly interTokenLatency: Histogram;
  private readonly generations: Counter<'stop_reason'>;

  constructor(engine: () => Engine | undefined) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry }); // process_resident_memory_bytes, event loop lag, GC
    this.requests = new Counter({
      name: 'pensieve_http_requests_total', help: 'HTTP requests answered, by method, route and status.',
      labelNames: ['method', 'route', 'status'], registers,
    });
    this.timeToFirstToken = new Histogram({
      name: 'pensieve_time_to_first_token_seconds', help: 'From the message request to its first generated token.',
      buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120], registers,
    });
    this.interTokenLatency = new Histogram({
      name: 'pensieve_inter_token_latency_seconds', help: 'Between consecutive generated tokens of a request, as the HTTP side receives them.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers,
    });
    this.generations = new Counter({
      name: 'pensieve_generations_total', help: 'Generations ended, by the engine\'s stop reason.', labelNames: ['stop_reason'], registers,
    });

    /** A counter that follows a running total read at each scrape. */
    const total = (name: string, help: string, read: () => number | undefined): void => {
      let last = 0;
      new Counter({
        name, help, registers,
        collect() {
          const now = read();
          if (now === undefined) return;
          this.inc((now - last) >>> 0); // the engine's int32 counters wrap; the unsigned difference does not
          last = now;
        },
      });
    };
    const status = (): EngineStatus | undefined => (engine()?.alive ? engine()!.status() : undefined);
    for (const [name, help, field] of ENGINE_COUNTERS) total(name, help, () => status()?.[field]);
    const { promptPieceCounts } = loadAddon();
    for (const [name, help, field] of PROMPT_PIECE_COUNTERS) total(name, help, () => promptPieceCounts()[field]);
    const gauge = (name: string, help: string, read: () => number | undefined): void => {
      new Gauge({ name, help, registers, collect() { const v = read(); if (v !== undefined) this.set(v); } });
    };
    gauge('pensieve_queue_depth', 'Requests waiting for a free slot.', () => status()?.queued);
    gauge('pensieve_slots_busy', 'Slots generating or computing a prompt.', () => status()?.slotsBusy);
    gauge('pensieve_slots', 'Slots (sequences generated at once).', () => engine()?.settings.slots);
    gauge('pensieve_kv_cells', 'KV cache cells in the pool that all slots share.', () => engine()?.settings.poolTokens);
    gauge('pensieve_kv_cells_used', 'KV pool cells in use: running generations and cached prefixes.', () => status()?.kvCellsUsed);
  }

  /**
   * Counts every request by its status, or 499 (nginx's "client closed request") when the client left
   * before the response ended, e.g. mid-stream; `route` is the matched pattern, so unknown paths add no series.
   */
  register(app: FastifyInstance): void {
    // The response's close, not Fastify's onResponse: that one never runs for a response cut short.
    app.addHook('onRequest', async (request, reply) => {
      reply.raw.once('close', () => {
        const status = reply.raw.writableFinished ? String(reply.statusCode) : '499';
        this.requests.inc({ method: request.method, route: request.routeOptions.url ?? 'unmatched', status });
      });
    });
    app.get('/metrics', async (_request, reply) => {
      reply.type(this.registry.contentType);
      return this.registry.metrics();
    });
  }

  /** A recorder for one message request; its clock for time to first token starts now. */
  request(): RequestMetrics {
    const receivedAt = performance.now();
    return { observe: (events) => this.observe(events, receivedAt) };
  }

  private async *observe(events: AsyncIterable<GenerationEvent>, receivedAt: number): AsyncIterable<GenerationEvent> {
    let last: number | undefined;
    for await (const event of events) {
      if (event.type === 'text') {
        const now = performance.now();
        if (last === undefined) {
          this.timeToFirstToken.observe((now - receivedAt) / 1000);
        } else {
          this.interTokenLatency.observe((now - last) / 1000);
        }
        last = now;
      } else if (event.type === 'final') {
        this.generations.inc({ stop_reason: event.stopReason });
      }
      yield event;
    }
  }
}
