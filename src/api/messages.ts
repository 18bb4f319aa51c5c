// POST /v1/messages (streaming and not) and POST /v1/messages/count_tokens.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type {} from '@fastify/sse'; // reply.sse and the route's `sse` option
import { loadAddon } from '../native.js';
import { EngineOverloadedError, PromptTooLongError, type Engine, type Generation, type GenerationEvent } from '../engine/engine.js';
import type { FinalStats, GenerateParams } from '../engine/types.js';
import type { PreparePool } from '../chat/prepare-pool.js';
import type { PreparedChat } from '../chat/renderer.js';
import { samplingParams, thinkingRequested } from './convert.js';
import { ApiError, promptTooLong } from './errors.js';
import { MessageBuilder, type StreamEvent } from './message-builder.js';
import { SessionPrompts } from './session-prompts.js';
import { countTokensRequestSchema, messagesRequestSchema, type CountTokensRequest, type MessagesRequest } from './schemas.js';

export interface MessagesDeps {
  /** The engine, once the model is loaded. */
  engine: () => Engine | undefined;
  pool: PreparePool;
  /** Seconds between pings while nothing else is sent (waiting in the queue, prefilling). */
  pingSeconds?: number;
  /** A recorder for each message request (time to first token, inter-token latency, the dashboard's record). */
  metrics?: (request: FastifyRequest) => RequestMetrics;
  /** Aborted when the server stops: running generations are cancelled and answered 529 overloaded_error, so clients retry. */
  stop?: AbortSignal;
  /** log.prompts: prompt text may be logged. */
  logPrompts?: boolean;
}

export interface RequestMetrics {
  /** Passes the generation's events through, recording them on the way. */
  observe(events: Generation): AsyncIterable<GenerationEvent>;
  /** The answer's stop reason, as the API reports it. */
  stopped?(reason: StopReason): void;
}

type StopReason = 'end_turn' | 'max_tokens' | 'stop_sequence' | 'tool_use';

const overloaded = (message: string): ApiError => new ApiError(529, 'overloaded_error', message, { 'retry-after': '1' });

function readyEngine(deps: MessagesDeps): Engine {
  const engine = deps.engine();
  if (!engine?.alive) throw overloaded('the model is not loaded yet');
  return engine;
}

const invalid = (message: string): ApiError => new ApiError(400, 'invalid_request_error', message);

/** What the schema cannot say: tool names are unique (the model calls tools by name). */
function checkToolNames(body: CountTokensRequest): void {
  const seen = new Map<string, number>();
  body.tools?.forEach((tool, i) => {
    if (tool.name === undefined) return;
    const first = seen.get(tool.name);
    if (first !== undefined) throw invalid(`tools.${i}.name: tool names must be unique: '${tool.name}' is also tools.${first}.name`);
    seen.set(tool.name, i);
  });
}

async function prepare(deps: MessagesDeps, engine: Engine, body: CountTokensRequest): Promise<PreparedChat> {
  const maximum = engine.settings.maxContext - 1;
  const prepared = await deps.pool.prepare(body, maximum);
  if (prepared.tokens.length > maximum) throw promptTooLong(prepared.tokens.length, maximum);
  return prepared;
}

function generateParams(body: MessagesRequest, prepared: PreparedChat): GenerateParams {
  const { chat } = prepared;
  const sampling = samplingParams(body);
  return {
    ...sampling,
    maxTokens: body.max_tokens, // the engine clamps it to what the context leaves
    // The template's own end markers stop generation too; they come after the user's, so a match
    // index tells which kind matched.
    stopSequences: [...(sampling.stopSequences ?? []), ...chat.additionalStops],
    shownSpecialTokens: chat.preservedTokens,
    ...(prepared.images && { images: prepared.images }),
    ...(chat.grammar !== '' && {
      grammar: {
        gbnf: chat.grammar,
        lazy: chat.grammarLazy,
        triggerPatterns: chat.grammarTriggerPatterns,
        triggerTokens: chat.grammarTriggerTokens,
        prefill: chat.grammarPrefill,
      },
    }),
  };
}

function startGeneration(engine: Engine, prepared: PreparedChat, params: GenerateParams, signal: AbortSignal): Generation {
  try {
    return engine.generate(prepared.tokens, params, signal);
  } catch (err) {
    if (err instanceof EngineOverloadedError) throw overloaded(err.message);
    if (err instanceof PromptTooLongError) throw invalid(err.message);
    throw err;
  }
}

/** Reads the generation back through the chat format's parser into content blocks. */
class Transcript {
  readonly builder: MessageBuilder;
  private readonly parser;
  private ended = false;
  private opening: StreamEvent[] = [];

  /** `onSingleCallDone`: the one tool call allowed is complete, so the generation can stop there. */
  constructor(prepared: PreparedChat, showThinking: boolean, parseToolCalls: boolean, singleToolCall: boolean, private readonly onSingleCallDone: () => void) {
    const { chat } = prepared;
    this.builder = new MessageBuilder(showThinking, singleToolCall);
    this.parser = new (loadAddon().ChatParser)({ format: chat.format, generationPrompt: chat.generationPrompt, parser: chat.parser, parseToolCalls });
    // A forced opening (e.g. of a tool call) is part of the answer the parser reads, though not generated:
    // what it already makes of it (a tool_use block's start) goes out with the first generated text.
    if (prepared.outputPrefix !== '') this.opening = this.builder.apply(this.parser.update(prepared.outputPrefix, true));
  }

  push(text: string): StreamEvent[] {
    const events = [...this.takeOpening(), ...this.builder.apply(this.parser.update(text, true))];
    if (!this.ended && this.builder.singleCallDone) {
      this.ended = true;
      this.onSingleCallDone();
    }
    return events;
  }

  end(): StreamEvent[] {
    return [...this.takeOpening(), ...this.builder.apply(this.parser.update('', false)), ...this.builder.finish()];
  }

  private takeOpening(): StreamEvent[] {
    const events = this.opening;
    this.opening = [];
    return events;
  }
}

function logFinal(request: FastifyRequest, final: FinalStats): void {
  const { stopReason, promptTokens, cachedPromptTokens, generatedTokens, queueMs, prefillMs, decodeMs } = final;
  request.log.info({ stopReason, promptTokens, cachedPromptTokens, generatedTokens, queueMs, prefillMs, decodeMs }, 'generation finished');
}

function stopOf(final: FinalStats, body: MessagesRequest, transcript: Transcript): { reason: StopReason; sequence: string | null } {
  if (final.stopReason === 'max_tokens') return { reason: 'max_tokens', sequence: null };
  if (transcript.builder.hasToolUse) return { reason: 'tool_use', sequence: null };
  const userStops = body.stop_sequences ?? [];
  if (final.stopReason === 'stop_sequence' && final.stopSequenceIndex < userStops.length) {
    return { reason: 'stop_sequence', sequence: userStops[final.stopSequenceIndex] };
  }
  return { reason: 'end_turn', sequence: null };
}

function usage(final: Pick<FinalStats, 'promptTokens' | 'cachedPromptTokens' | 'generatedTokens'>) {
  return {
    input_tokens: final.promptTokens - final.cachedPromptTokens,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: final.cachedPromptTokens,
    output_tokens: final.generatedTokens,
  };
}

/**
 * A generation that ended without a whole answer becomes the matching API error. One cancelled because the
 * server stops is cut short: a 529 (an `error` event mid-stream), so that the client retries rather than
 * take the truncated answer for a finished one.
 */
function failureOf(final: FinalStats, stopping: boolean): ApiError | undefined {
  if (final.stopReason === 'overloaded') return overloaded('the server is overloaded: every slot is busy and the queue is full');
  if (final.stopReason === 'error') return new ApiError(500, 'api_error', 'generation failed in the engine');
  if (final.stopReason === 'cancelled' && stopping) return overloaded('the server is shutting down: the answer was cut short');
  return undefined;
}

const messageId = (): string => `msg_${randomBytes(12).toString('base64url')}`;

async function completeMessage(
  request: FastifyRequest,
  body: MessagesRequest,
  events: AsyncIterable<GenerationEvent>,
  transcript: Transcript,
  serverStop: AbortSignal | undefined,
  metrics: RequestMetrics | undefined,
) {
  for await (const event of events) {
    if (event.type === 'started') continue;
    if (event.type === 'text') {
      transcript.push(event.text);
      continue;
    }
    logFinal(request, event);
    const failure = failureOf(event, serverStop?.aborted === true);
    if (failure) throw failure;
    transcript.end();
    const stop = stopOf(event, body, transcript);
    metrics?.stopped?.(stop.reason);
    return {
      id: messageId(),
      type: 'message',
      role: 'assistant',
      model: body.model,
      content: transcript.builder.content,
      stop_reason: stop.reason,
      stop_sequence: stop.sequence,
      usage: usage(event),
    };
  }
  throw new ApiError(500, 'api_error', 'generation ended without a result');
}

async function streamMessage(
  request: FastifyRequest,
  body: MessagesRequest,
  prepared: PreparedChat,
  events: AsyncIterable<GenerationEvent>,
  transcript: Transcript,
  reply: FastifyReply,
  pingSeconds: number,
  serverStop: AbortSignal | undefined,
  metrics: RequestMetrics | undefined,
): Promise<void> {
  let lastSent = Date.now();
  let started = false;
  const send = async (batch: StreamEvent[]): Promise<void> => {
    if (batch.length === 0 || !reply.sse.isConnected) return;
    lastSent = Date.now();
    for (const e of batch) await reply.sse.send(e);
  };
  // message_start goes out once the request has its place and its cached prefix is known, so that its usage
  // (which clients read the prompt's accounting from) is the real one.
  const start = (cachedPromptTokens: number): Promise<void> => {
    started = true;
    return send([{
      event: 'message_start',
      data: {
        type: 'message_start',
        message: {
          id: messageId(), type: 'message', role: 'assistant', model: body.model, content: [],
          stop_reason: null, stop_sequence: null,
          usage: { ...usage({ promptTokens: prepared.tokens.length, cachedPromptTokens, generatedTokens: 0 }), output_tokens: 1 },
        },
      },
    }]);
  };
  // Keep-alives while the request waits in the queue or its prompt is computed, so clients do not time out:
  // before message_start, SSE comment lines (every client ignores them), then ping events, as Anthropic sends.
  const pinger = setInterval(() => {
    if (Date.now() - lastSent < pingSeconds * 1000 || !reply.sse.isConnected) return;
    if (started) void send([{ event: 'ping', data: { type: 'ping' } }]);
    else {
      lastSent = Date.now();
      reply.raw.write(': keep-alive\n\n');
    }
  }, 250);
  try {
    reply.sse.sendHeaders();
    for await (const event of events) {
      if (event.type === 'started') {
        await start(event.cachedPromptTokens);
        continue;
      }
      if (!started) await start(event.type === 'final' ? event.cachedPromptTokens : 0);
      if (event.type === 'text') {
        await send(transcript.push(event.text));
        continue;
      }
      logFinal(request, event);
      const failure = failureOf(event, serverStop?.aborted === true);
      if (failure) {
        await send([{ event: 'error', data: { type: 'error', error: { type: failure.type, message: failure.message } } }]);
        return;
      }
      await send(transcript.end());
      const stop = stopOf(event, body, transcript);
      metrics?.stopped?.(stop.reason);
      await send([
        { event: 'message_delta', data: { type: 'message_delta', delta: { stop_reason: stop.reason, stop_sequence: stop.sequence }, usage: usage(event) } },
        { event: 'message_stop', data: { type: 'message_stop' } },
      ]);
    }
  } finally {
    clearInterval(pinger);
  }
}

const DEBUG_LEVELS = new Set(['debug', 'trace']);

/**
 * At debug level: where a Claude Code session's prompt stops extending the session's previous one, which
 * costs the prefix cache all that follows (session-prompts.ts); the text around it with log.prompts.
 */
function logPromptChange(request: FastifyRequest, sessions: SessionPrompts, engine: Engine, tokens: Int32Array, showText: boolean): void {
  const session = request.headers['x-claude-code-session-id'];
  if (typeof session !== 'string' || !DEBUG_LEVELS.has(request.log.level)) return;
  const change = sessions.record(session, tokens);
  if (!change) return;
  const around = (prompt: Int32Array): string => engine.detokenize(prompt.subarray(Math.max(0, change.index - 24), change.index + 24));
  request.log.debug({
    session, index: change.index, previousTokens: change.previous.length, tokens: tokens.length,
    ...(showText && { before: around(change.previous), now: around(tokens) }),
  }, "prompt departs from the session's previous one");
}

export function registerMessageRoutes(app: FastifyInstance, deps: MessagesDeps): void {
  const sessions = new SessionPrompts();
  app.post('/v1/messages', { schema: { body: messagesRequestSchema }, sse: { kind: 'manual', heartbeat: false } },
    async (request: FastifyRequest, reply: FastifyReply) => {
      const body = request.body as MessagesRequest;
      checkToolNames(body);
      const metrics = deps.metrics?.(request);
      const engine = readyEngine(deps);
      const prepared = await prepare(deps, engine, body);
      logPromptChange(request, sessions, engine, prepared.tokens, deps.logPrompts === true);
      const cancel = new AbortController();
      // A client that goes away, or the server stopping, cancels the generation, which frees its slot at once.
      const abort = (): void => cancel.abort();
      deps.stop?.addEventListener('abort', abort, { once: true });
      reply.raw.on('close', () => {
        abort();
        deps.stop?.removeEventListener('abort', abort);
      });
      if (deps.stop?.aborted) abort();
      const params = generateParams(body, prepared);
      const generation = startGeneration(engine, prepared, params, cancel.signal);
      const events = metrics ? metrics.observe(generation) : generation;
      // With one tool call allowed, the answer ends once that call is complete, whatever the model would add.
      const choice = body.tool_choice;
      const singleCall = choice !== undefined && (choice.type === 'tool' || ('disable_parallel_tool_use' in choice && choice.disable_parallel_tool_use === true));
      const transcript = new Transcript(prepared, thinkingRequested(body) && body.thinking?.type !== 'disabled', prepared.chat.grammar !== '',
        singleCall, () => cancel.abort());
      if (!body.stream) return completeMessage(request, body, events, transcript, deps.stop, metrics);
      await streamMessage(request, body, prepared, events, transcript, reply, deps.pingSeconds ?? 5, deps.stop, metrics);
    });

  app.post('/v1/messages/count_tokens', { schema: { body: countTokensRequestSchema } }, async (request) => {
    const body = request.body as CountTokensRequest;
    checkToolNames(body);
    const prepared = await deps.pool.prepare(body);
    return { input_tokens: prepared.tokens.length };
  });
}
