// The dashboard at GET /: a static page (dashboard/ at the project's root, and uPlot's files from its
// package: the page loads nothing from the network) and GET /dashboard/events, one server-sent-events stream
// per page that carries a snapshot a second (hub.ts). Message requests are recorded into the history as they
// arrive and end, by hooks on their route and by the recorder that messages.ts runs their events through.
//
// Access: the page and its files hold no data and are open, like /health; the events are checked as the API
// is (src/api/auth.ts), and the Host check applies to every route. The page sends the key in a header through
// fetch() streaming rather than EventSource, which cannot send headers: the alternative, the key in the
// URL's query, would put it in the request logs (Fastify logs each URL), the browser's history and any proxy's
// logs.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type {} from '@fastify/sse';
import type { Generation, GenerationEvent } from '../../engine/engine.js';
import type { RequestMetrics } from '../../api/messages.js';
import { projectRoot } from '../../paths.js';
import { RequestHistory, type RequestRecord } from './history.js';
import { SnapshotHub } from './hub.js';
import { SnapshotBuilder, type SnapshotSources } from './snapshot.js';

/** Another recorder of the events (the Prometheus metrics). */
export interface EventObserver {
  observe(events: AsyncIterable<GenerationEvent>): AsyncIterable<GenerationEvent>;
}

const EVENTS = '/dashboard/events';

export interface DashboardOptions extends Omit<SnapshotSources, 'history'> {
  /** log.prompts: the start of each request's last user message may be shown. */
  logPrompts: boolean;
}

export interface Dashboard {
  /** A recorder for a message request's generation (see MessagesDeps.metrics), passing its events on to `next`. */
  recorder(request: FastifyRequest, next?: EventObserver): RequestMetrics;
}

/** uPlot's dist folder (its main file is there). */
const uplotDist = (): string => dirname(createRequire(import.meta.url).resolve('uplot'));

/** The page's files: URL path, file, content type. Read on first request and kept (they are small). */
const FILES: [string, () => string, string][] = [
  ['/', () => join(projectRoot, 'dashboard', 'index.html'), 'text/html; charset=utf-8'],
  ['/dashboard/app.js', () => join(projectRoot, 'dashboard', 'app.js'), 'text/javascript; charset=utf-8'],
  ['/dashboard/style.css', () => join(projectRoot, 'dashboard', 'style.css'), 'text/css; charset=utf-8'],
  ['/dashboard/uPlot.iife.min.js', () => join(uplotDist(), 'uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
  ['/dashboard/uPlot.min.css', () => join(uplotDist(), 'uPlot.min.css'), 'text/css; charset=utf-8'],
];

/** Only this origin's files and connections; uPlot sets element styles from script, which style-src does not govern. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const PREVIEW_CHARS = 160;

/** The start of the last user message's text, for log.prompts. */
function preview(body: unknown): string | undefined {
  const messages = (body as { messages?: unknown }).messages;
  if (!Array.isArray(messages)) return undefined;
  const last = [...messages].reverse().find((m) => (m as { role?: unknown }).role === 'user') as { content?: unknown } | undefined;
  const content = last?.content;
  const text = typeof content === 'string'
    ? content
    : Array.isArray(content) ? content.map((b) => ((b as { type?: unknown }).type === 'text' ? String((b as { text?: unknown }).text ?? '') : '')).join(' ') : '';
  return text.slice(0, PREVIEW_CHARS);
}

export function registerDashboard(app: FastifyInstance, options: DashboardOptions): Dashboard {
  const history = new RequestHistory();
  const builder = new SnapshotBuilder({ ...options, history });
  const hub = new SnapshotHub(
    async () => JSON.stringify(await builder.build()),
    1000,
    (err) => app.log.warn({ err }, 'dashboard snapshot failed'),
  );
  const records = new WeakMap<FastifyRequest, RequestRecord>();
  const isMessage = (request: FastifyRequest): boolean => request.method === 'POST' && request.routeOptions.url === '/v1/messages';

  // Registered after the Host and key checks, so only requests they let through are recorded.
  app.addHook('onRequest', async (request, reply) => {
    if (!isMessage(request)) return;
    const record = history.begin(request.id, Date.now());
    const session = request.headers['x-claude-code-session-id'];
    if (typeof session === 'string') record.session = session.slice(0, 100);
    records.set(request, record);
    // The response's close, not onResponse, which never runs for a response cut short.
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished && record.engineId !== undefined) record.stopReason = 'cancelled'; // the client left mid-answer
      history.end(record, Date.now(), reply.raw.writableFinished ? reply.statusCode : 499);
    });
  });
  // Before validation, so that a refused body still names its model.
  app.addHook('preValidation', async (request) => {
    const record = records.get(request);
    if (!record || typeof request.body !== 'object' || request.body === null) return;
    const { model, stream } = request.body as { model?: unknown; stream?: unknown };
    if (typeof model === 'string') record.model = model.slice(0, 200);
    record.stream = stream === true;
    if (options.logPrompts) record.preview = preview(request.body);
  });
  app.addHook('onError', async (request, _reply, error) => {
    const record = records.get(request);
    if (record) record.error = error.message;
  });
  /** The open event streams' ends: a stream left open would hold the server's close. */
  const streams = new Set<() => void>();
  app.addHook('preClose', async () => {
    hub.stop();
    for (const close of streams) close();
  });

  for (const [url, file, type] of FILES) {
    let body: Buffer | undefined;
    app.get(url, async (_request, reply) => {
      body ??= readFileSync(file());
      return reply.type(type).header('content-security-policy', CSP).header('x-content-type-options', 'nosniff').header('cache-control', 'no-cache').send(body);
    });
  }

  app.get(EVENTS, { sse: { kind: 'only', heartbeat: false, serializer: (frame: unknown) => frame as string } }, async (_request, reply) => {
    reply.sse.keepAlive();
    reply.sse.sendHeaders();
    const remove = hub.add(async (frame) => {
      if (reply.sse.isConnected) await reply.sse.send({ event: 'snapshot', data: frame });
    });
    const close = (): void => reply.sse.close();
    streams.add(close);
    reply.sse.onClose(() => {
      remove();
      streams.delete(close);
    });
  });

  return {
    recorder(request, next) {
      const record = records.get(request);
      return {
        observe: (generation) => {
          const events = record ? observe(generation, record) : generation;
          return next ? next.observe(events) : events;
        },
        stopped: (reason) => {
          // A client that left saw no stop reason: its answer was cancelled (the engine's final record said so).
          if (record && record.status !== 499) record.stopReason = reason;
        },
      };
    },
  };
}

/** Follows a generation's events into its record. */
async function* observe(generation: Generation, record: RequestRecord): AsyncIterable<GenerationEvent> {
  record.engineId = generation.id;
  record.state = 'queued';
  for await (const event of generation) {
    if (event.type === 'started') {
      record.state = 'prefill';
      record.cachedTokens = event.cachedPromptTokens;
    } else if (event.type === 'text') {
      if (record.outputTokens++ === 0) {
        record.state = 'decode';
        record.ttftMs = Date.now() - record.at;
      }
    } else {
      record.promptTokens = event.promptTokens;
      record.cachedTokens = event.cachedPromptTokens;
      record.outputTokens = event.generatedTokens;
      // The API's stop reason comes from messages.ts (stopped()), which a generation that failed never reaches.
      if (event.stopReason === 'error' || event.stopReason === 'overloaded') record.error ??= `generation ended: ${event.stopReason}`;
      record.stopReason = event.stopReason;
    }
    yield event;
  }
}
