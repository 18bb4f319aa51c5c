// Claude Code replay (issue 4): Claude-Code-shaped traffic against Pensieve and against llama.cpp's llama-server,
// same model, same llama.cpp source, same threads, same slots, in one run.
//
//   npm run bench:replay -- [--model PATH] [--threads N] [--turns N] [--sessions 1,4] [--max-tokens N]
//                           [--prefix-tokens N] [--new-tokens N] [--llama-args "..."] [--servers pensieve,llama]
//                           [--pensieve-fa off|on|auto] [--slots N] [--shared-opening] [--gpu-layers N]
//
// A session starts with the request Claude Code really sent first (../shared/fixtures/claude-code-first-request.json:
// system prompt, 12 tools, a first user message and a mid-conversation system message), its system prompt grown
// with filler to about --prefix-tokens tokens of system + tools when it is smaller than 15k. Each later turn adds
// the assistant's previous answer as the server returned it (its text, plus a tool_use of Read when the answer had
// none) and a user message with the tool_result(s), the main one carrying about --new-tokens tokens of new content.
// With S sessions, all S share the system prompt and tools and differ from their first user prompt on; their turns
// run in lockstep (turn t of every session is sent at once, then turn t+1). Each server is started fresh for each
// session count, with S slots and an empty cache, so the first turn is always cold. With --slots N, each gets
// min(S, N) slots instead: more sessions than slots, so sessions evict each other's cached prefixes every turn
// (Pensieve saves an evicted prefix to its cache folder and loads it back; llama-server keeps it in its RAM cache).
// With --shared-opening, all sessions send the same first request (session 1's) and differ from turn 2 on, by their
// tool results: sessions forked from one context, like Claude Code's parallel calls, whose own parts are only their
// turns (by default each session's own part also holds the fixture's 9 KB system message after its prompt).
//
// Per turn: time to first token (from sending the request to the first content_block_delta of the stream) and
// the prompt tokens each server computed: usage.input_tokens (Anthropic semantics: computed, not read from cache;
// cache_read_input_tokens are the reused ones), cross-checked against each server's /metrics.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import {
  assistantTurn, filler, firstMessages, loadTraffic, sizePrefix, toolResults,
  type BaseBody, type Block, type Message, type RequestBody, type Traffic,
} from './claude-code-traffic.js';
import { buildLlamaTools, llamaSourceDir, repoRoot } from './llama-tools.js';
import { gpuLayersOption, median, positiveInt } from './options.js';
import {
  PENSIEVE_KEY, llamaServerArgs, machineTicks, processTicks, startLlamaServer, startPensieve, type RunningServer,
} from './servers.js';

const TARGETS = { repeatedTtftRatio: 0.10, prefillRatio4: 1.25 };
const QWEN25_TEMPLATE = join(llamaSourceDir, 'models', 'templates', 'Qwen-Qwen2.5-7B-Instruct.jinja');

type ServerKind = 'pensieve' | 'llama';
const SERVER_NAMES: Record<ServerKind, string> = { pensieve: 'pensieve', llama: 'llama-server' };

interface Options {
  model: string;
  threads: number;
  turns: number;
  sessions: number[];
  maxTokens: number;
  prefixTokens: number;
  newTokens: number;
  llamaArgs: string[];
  servers: ServerKind[];
  /** Pensieve's engine.flash_attention, when given (else its config default). */
  pensieveFa: string | undefined;
  /** Most slots per server (undefined: as many as sessions). */
  slots: number | undefined;
  /** Every session sends the same first request and differs from turn 2 on. */
  sharedOpening: boolean;
  /** Layers on the GPU, for both servers (0: CPU only; needs a PENSIEVE_GPU=cuda build). */
  gpuLayers: number;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' },
      threads: { type: 'string' },
      turns: { type: 'string' },
      sessions: { type: 'string' },
      'max-tokens': { type: 'string' },
      'prefix-tokens': { type: 'string' },
      'new-tokens': { type: 'string' },
      'llama-args': { type: 'string' },
      servers: { type: 'string' },
      'pensieve-fa': { type: 'string' },
      slots: { type: 'string' },
      'shared-opening': { type: 'boolean' },
      'gpu-layers': { type: 'string' },
    },
  });
  const model = values.model ? resolve(values.model) : resolve(repoRoot, '../shared/models/random-qwen2-small-100m-q8_0.gguf');
  if (!existsSync(model)) throw new Error(`model not found: ${model} (pass --model PATH)`);
  const sessions = [...new Set((values.sessions ?? '1,4').split(',').map((s) => positiveInt('sessions', s.trim(), 1)))].sort((a, b) => a - b);
  const servers = (values.servers ?? 'pensieve,llama').split(',').map((s) => s.trim()) as ServerKind[];
  for (const s of servers) if (!(s in SERVER_NAMES)) throw new Error(`--servers: unknown server "${s}" (pensieve, llama)`);
  // llama-server renders with the same template as Pensieve: the model's ChatML template has no tool support, and
  // Pensieve then uses llama.cpp's Qwen2.5 template (src/chat/renderer.ts); without it llama-server would fall
  // back to its generic JSON tool format, a different prompt and an answer held in a JSON grammar.
  const llamaArgs = values['llama-args'] !== undefined
    ? values['llama-args'].split(/\s+/).filter(Boolean)
    : ['--chat-template-file', QWEN25_TEMPLATE];
  if (values['pensieve-fa'] !== undefined && !['off', 'on', 'auto'].includes(values['pensieve-fa'])) {
    throw new Error(`--pensieve-fa must be off, on or auto, got "${values['pensieve-fa']}"`);
  }
  return {
    model,
    threads: positiveInt('threads', values.threads, availableParallelism()),
    turns: positiveInt('turns', values.turns, 5),
    sessions,
    maxTokens: positiveInt('max-tokens', values['max-tokens'], 24),
    prefixTokens: positiveInt('prefix-tokens', values['prefix-tokens'], 16_000),
    newTokens: positiveInt('new-tokens', values['new-tokens'], 250),
    llamaArgs,
    servers: [...new Set(servers)],
    pensieveFa: values['pensieve-fa'],
    slots: values.slots === undefined ? undefined : positiveInt('slots', values.slots, 1),
    sharedOpening: values['shared-opening'] ?? false,
    gpuLayers: gpuLayersOption(values['gpu-layers']),
  };
}

// ---- HTTP ----

const dispatcher = new Agent({ headersTimeout: 0, bodyTimeout: 0, connections: 64 });

function headers(): Record<string, string> {
  return {
    'content-type': 'application/json',
    'x-api-key': PENSIEVE_KEY,
    'anthropic-version': '2023-06-01',
  };
}

async function postJson(server: RunningServer, path: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await request(`${server.baseUrl}${path}`, { method: 'POST', headers: headers(), body: JSON.stringify(body), dispatcher });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${server.name} ${path}: HTTP ${res.statusCode}: ${text.slice(0, 2000)}`);
  return JSON.parse(text) as Record<string, unknown>;
}

async function countTokens(server: RunningServer, body: BaseBody, messages: Message[]): Promise<number> {
  const { system, tools, model } = body;
  const res = await postJson(server, '/v1/messages/count_tokens', { model, system, tools, messages });
  return Number(res.input_tokens);
}

/** One streamed answer: time to first content delta, usage, and the content blocks rebuilt from the deltas. */
interface Answer {
  ttftMs: number;
  /** true when the stream had no content delta at all; ttftMs is then the time to message_delta. */
  noContent: boolean;
  totalMs: number;
  computed: number;
  cached: number;
  outputTokens: number;
  stopReason: string;
  content: Block[];
}

async function sendMessage(server: RunningServer, body: RequestBody): Promise<Answer> {
  const t0 = performance.now();
  const res = await request(`${server.baseUrl}/v1/messages`, { method: 'POST', headers: headers(), body: JSON.stringify(body), dispatcher });
  if (res.statusCode !== 200) throw new Error(`${server.name} /v1/messages: HTTP ${res.statusCode}: ${(await res.body.text()).slice(0, 2000)}`);
  let ttft: number | undefined;
  let endAt: number | undefined;
  const usage: Record<string, number> = {};
  let stopReason = '';
  const blocks: Block[] = [];
  const partialJson: string[] = [];
  const onEvent = (data: Record<string, unknown>): void => {
    switch (data.type) {
      case 'message_start':
        Object.assign(usage, (data.message as { usage?: Record<string, number> }).usage ?? {});
        break;
      case 'content_block_start':
        blocks[data.index as number] = { ...(data.content_block as Block) };
        partialJson[data.index as number] = '';
        break;
      case 'content_block_delta': {
        ttft ??= performance.now() - t0;
        const delta = data.delta as Record<string, string>;
        const block = blocks[data.index as number];
        if (!block) break;
        if (delta.type === 'text_delta') block.text = String(block.text ?? '') + delta.text;
        else if (delta.type === 'thinking_delta') block.thinking = String(block.thinking ?? '') + delta.thinking;
        else if (delta.type === 'input_json_delta') partialJson[data.index as number] += delta.partial_json;
        break;
      }
      case 'content_block_stop': {
        const block = blocks[data.index as number];
        if (block?.type === 'tool_use') {
          const json = partialJson[data.index as number];
          try {
            block.input = json ? JSON.parse(json) : (block.input ?? {});
          } catch {
            block.input = {};
          }
        }
        break;
      }
      case 'message_delta':
        endAt ??= performance.now() - t0;
        Object.assign(usage, (data.usage as Record<string, number> | undefined) ?? {});
        stopReason = String((data.delta as { stop_reason?: string }).stop_reason ?? '');
        break;
      case 'error':
        throw new Error(`${server.name} stream error: ${JSON.stringify(data)}`);
    }
  };
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body) {
    buffer += decoder.decode(chunk as Buffer, { stream: true });
    let cut: number;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const raw = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
      const data = raw.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (data && data !== '[DONE]') onEvent(JSON.parse(data) as Record<string, unknown>);
    }
  }
  const totalMs = performance.now() - t0;
  return {
    ttftMs: ttft ?? endAt ?? totalMs,
    noContent: ttft === undefined,
    totalMs,
    computed: usage.input_tokens ?? NaN,
    cached: usage.cache_read_input_tokens ?? 0,
    outputTokens: usage.output_tokens ?? 0,
    stopReason,
    content: blocks.filter(Boolean),
  };
}

/** Prompt tokens the server says it computed in total, from its /metrics; NaN when it has no such counter. */
async function metricsComputed(server: RunningServer, kind: ServerKind): Promise<number> {
  const res = await request(`${server.baseUrl}/metrics`, { headers: headers(), dispatcher });
  const text = await res.body.text();
  if (res.statusCode !== 200) return NaN;
  const value = (name: string): number => {
    const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line ? Number(line.trim().split(/\s+/).pop()) : NaN;
  };
  if (kind === 'llama') return value('llamacpp:prompt_tokens_total');
  return value('pensieve_prompt_tokens_total') - value('pensieve_cached_prompt_tokens_total');
}

// ---- one replay ----

interface TurnResult {
  answers: Answer[]; // one per session
  /** Prompt tokens of each session's request, as the server counts them (count_tokens). */
  promptTokens: number[];
  /** Computed prompt tokens from /metrics over this turn (all sessions). */
  metricsComputed: number;
  /** Cores other processes kept busy during this turn. */
  otherLoad: number;
}

interface Replay {
  server: ServerKind;
  sessions: number;
  turns: TurnResult[];
}

async function replay(server: RunningServer, kind: ServerKind, traffic: Traffic, o: Options, sessions: number): Promise<Replay> {
  const conversations = Array.from({ length: sessions }, (_, s) => firstMessages(traffic, o.sharedOpening ? 0 : s));
  const turns: TurnResult[] = [];
  for (let t = 1; t <= o.turns; t++) {
    const promptTokens = await Promise.all(conversations.map((messages) => countTokens(server, traffic.base, messages)));
    const before = await metricsComputed(server, kind);
    const ticks0 = { machine: machineTicks(), ours: processTicks(process.pid) + processTicks(server.pid) };
    const w0 = performance.now();
    const answers = await Promise.all(conversations.map((messages) => sendMessage(server, { ...traffic.base, messages } as RequestBody)));
    const seconds = (performance.now() - w0) / 1000;
    const ours = processTicks(process.pid) + processTicks(server.pid) - ticks0.ours;
    const otherLoad = Math.max(0, (machineTicks() - ticks0.machine - ours) / 100 / seconds);
    const after = await metricsComputed(server, kind);
    turns.push({ answers, promptTokens, metricsComputed: after - before, otherLoad });
    const line = answers.map((a) => `${fmtMs(a.ttftMs)}${a.noContent ? '*' : ''} ms / ${a.computed} computed`).join(', ');
    log(`${SERVER_NAMES[kind]}, ${sessions} session(s), turn ${t}: ${line}`);
    if (t < o.turns) {
      conversations.forEach((messages, s) => {
        const { message, toolUses } = assistantTurn(answers[s].content, s, t);
        messages.push(message, toolResults(toolUses, s, t, o.newTokens));
      });
    }
  }
  return { server: kind, sessions, turns };
}

/** Short requests on every slot at once, so that buffers are allocated before the first measured turn. */
async function warmUp(server: RunningServer, slots: number): Promise<void> {
  await Promise.all(Array.from({ length: slots }, (_, i) => sendMessage(server, {
    model: 'claude-opus-5-5', system: [], tools: [], max_tokens: 4, temperature: 0, stream: true,
    messages: [{ role: 'user', content: `warm up ${i}` }],
  })));
}

// ---- report ----

const log = (line: string): void => void process.stderr.write(`[replay] ${line}\n`);
const fmtMs = (ms: number): string => (Number.isNaN(ms) ? 'n/a' : ms >= 100 ? ms.toFixed(0) : ms.toFixed(1));
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/** Computed prompt tokens over all turns and sessions. */
const totalComputed = (r: Replay): number => sum(r.turns.map((t) => sum(t.answers.map((a) => a.computed))));

/** Worst over sessions of (largest TTFT of turns 2..N) / (that session's turn-1 TTFT). */
function repeatedTtftRatio(r: Replay): number {
  if (r.turns.length < 2) return NaN;
  let worst = 0;
  for (let s = 0; s < r.sessions; s++) {
    const first = r.turns[0].answers[s].ttftMs;
    const later = Math.max(...r.turns.slice(1).map((t) => t.answers[s].ttftMs));
    worst = Math.max(worst, later / first);
  }
  return worst;
}

/** Median TTFT of turns 2..N over all sessions. */
const repeatedTtft = (r: Replay): number => median(r.turns.slice(1).flatMap((t) => t.answers.map((a) => a.ttftMs)));

function machine(): string {
  const cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
  const source = readFileSync(join(llamaSourceDir, '.pensieve-source'), 'utf8').trim();
  // Its own checkout's commit: a source unpacked from an archive has none (git would report an enclosing repository's).
  const rev = existsSync(join(llamaSourceDir, '.git'))
    ? execFileSync('git', ['-C', llamaSourceDir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()
    : 'no git checkout';
  return `${availableParallelism()} cores, ${cpu}; Node ${process.version}; llama.cpp from ${source} (${rev})`;
}

function report(o: Options, results: Replay[], sizes: Record<string, string>, contextPerSlot: number, bin: string): string {
  const out: string[] = [];
  out.push(`model: ${o.model}`);
  out.push(`machine: ${machine()}`);
  out.push(`threads: ${o.threads}; ${o.turns} turns per session; max_tokens ${o.maxTokens}, temperature 0, streaming; ` +
    `about ${o.newTokens} new tokens per turn; slots = ${o.slots === undefined ? 'sessions' : `min(sessions, ${o.slots})`}, ` +
    `${contextPerSlot} tokens of context per slot`);
  out.push(`system + tools: ${sizes.prefix}`);
  out.push(`sessions differ from ${o.sharedOpening ? 'turn 2 on (--shared-opening: one first request for all)' : 'their first user prompt on'}`);
  out.push(`pensieve: node dist/src/cli.js start with engine.slots = slots, pool_tokens = slots x ${contextPerSlot}, max_context = ${contextPerSlot}, kv_type = "f16", threads = ${o.threads}, ` +
    `model.gpu_layers = ${o.gpuLayers}` +
    (o.pensieveFa === undefined ? ', other keys at their defaults (config/pensieve.toml)' : `, flash_attention = "${o.pensieveFa}"`) +
    '; an empty cache folder');
  out.push(`llama-server: ${join(bin, 'llama-server')} ${llamaServerArgs({ bin, model: o.model, slots: 0, contextPerSlot, threads: o.threads, gpuLayers: o.gpuLayers, extraArgs: o.llamaArgs })
    .join(' ').replace('-np 0 -kvu -c 0', '-np SLOTS -kvu -c SLOTS*' + contextPerSlot).replace(o.model, 'MODEL').replace(llamaSourceDir, 'native/deps/llama.cpp')}`);
  out.push('');
  out.push('TTFT: ms from sending the request to the first content_block_delta (one figure per session). ' +
    'computed: prompt tokens the server computed (usage.input_tokens, all sessions); cached: cache_read_input_tokens; ' +
    'prompt: the request\'s prompt tokens by the server\'s count_tokens (per session, first session shown).');
  out.push('');
  out.push('| server | sessions | turn | prompt | TTFT ms | computed | cached | /metrics computed |');
  out.push('| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |');
  for (const r of results) {
    r.turns.forEach((t, i) => {
      const ttft = t.answers.map((a) => `${fmtMs(a.ttftMs)}${a.noContent ? '*' : ''}`).join(' / ');
      const busy = t.otherLoad >= 0.1 ? ` (busy: ${t.otherLoad.toFixed(2)} cores)` : '';
      out.push(`| ${SERVER_NAMES[r.server]} | ${r.sessions} | ${i + 1} | ${t.promptTokens[0]} | ${ttft}${busy} | ` +
        `${sum(t.answers.map((a) => a.computed))} | ${sum(t.answers.map((a) => a.cached))} | ${t.metricsComputed} |`);
    });
    out.push(`| ${SERVER_NAMES[r.server]} | ${r.sessions} | all | | median of turns 2-${o.turns}: ${fmtMs(repeatedTtft(r))} | ` +
      `**${totalComputed(r)}** | ${sum(r.turns.flatMap((t) => t.answers.map((a) => a.cached)))} | ${sum(r.turns.map((t) => t.metricsComputed))} |`);
  }
  out.push('');
  const noContent = results.some((r) => r.turns.some((t) => t.answers.some((a) => a.noContent)));
  if (noContent) out.push('*: the answer had no content delta (the model ended at once); its TTFT is the time to message_delta.', '');
  const mismatches = results.flatMap((r) => r.turns.map((t, i) => ({ r, t, i })))
    .filter(({ t }) => !Number.isNaN(t.metricsComputed) && t.metricsComputed !== sum(t.answers.map((a) => a.computed)));
  if (mismatches.length > 0) {
    out.push(`NOTE: usage and /metrics disagree on computed tokens for: ${mismatches.map(({ r, i }) => `${SERVER_NAMES[r.server]} ${r.sessions}s turn ${i + 1}`).join(', ')}`, '');
  }

  // Checks.
  const find = (server: ServerKind, sessions: number): Replay | undefined => results.find((r) => r.server === server && r.sessions === sessions);
  const verdict = (ok: boolean): string => (ok ? 'PASS' : 'FAIL');
  const f3 = (v: number): string => (Number.isNaN(v) ? 'n/a' : v.toFixed(3));
  const many = Math.max(...o.sessions);
  for (const server of o.servers) {
    for (const n of o.sessions) {
      const r = find(server, n);
      if (!r || r.turns.length < 2) continue;
      const v = repeatedTtftRatio(r);
      out.push(`- ${SERVER_NAMES[server]}, ${n} session${n > 1 ? 's' : ''}: worst repeated-turn TTFT / first-turn TTFT = ${f3(v)} ` +
        `(target <= ${TARGETS.repeatedTtftRatio}) ${verdict(v <= TARGETS.repeatedTtftRatio)}`);
    }
    const one = find(server, 1);
    const multi = many > 1 ? find(server, many) : undefined;
    if (one && multi) {
      const v = totalComputed(multi) / totalComputed(one);
      const target = many === 4 ? TARGETS.prefillRatio4 : 1 + (many - 1) * 0.25 / 3;
      out.push(`- ${SERVER_NAMES[server]}: computed prompt tokens, ${many} sessions / 1 session = ${totalComputed(multi)} / ${totalComputed(one)} = ${f3(v)} ` +
        `(target <= ${f3(target)}) ${verdict(v <= target)}`);
    }
  }
  if (o.servers.includes('pensieve') && o.servers.includes('llama')) {
    for (const n of o.sessions) {
      const p = find('pensieve', n);
      const l = find('llama', n);
      if (!p || !l || p.turns.length < 2) continue;
      const a = repeatedTtft(p);
      const b = repeatedTtft(l);
      out.push(`- pensieve better than llama-server, ${n} session${n > 1 ? 's' : ''}: median repeated-turn TTFT ${fmtMs(a)} vs ${fmtMs(b)} ms ${verdict(a < b)}`);
    }
    const p1 = find('pensieve', 1);
    const pn = many > 1 ? find('pensieve', many) : undefined;
    const l1 = find('llama', 1);
    const ln = many > 1 ? find('llama', many) : undefined;
    if (p1 && pn && l1 && ln) {
      const a = totalComputed(pn) / totalComputed(p1);
      const b = totalComputed(ln) / totalComputed(l1);
      out.push(`- pensieve better than llama-server: ${many}-session / 1-session computed prompt tokens ${f3(a)} vs ${f3(b)} ${verdict(a < b)}`);
    }
  }
  // What the sharing target allows: the part of a session's prompts that no other session has.
  const one = results.find((r) => r.server === 'pensieve' && r.sessions === 1) ?? results.find((r) => r.sessions === 1);
  if (one && many > 1) {
    const shared = Number(sizes.sharedTokens);
    const own = totalComputed(one) - shared;
    if (shared > 0 && own > 0) {
      out.push('', `With perfect sharing, ${many} sessions would compute about ${shared} + ${many} x ${own} tokens ` +
        `(shared prefix once, each session's own ${own}): a ratio of ${f3((shared + many * own) / (shared + own))} to one session ` +
        `(${SERVER_NAMES[one.server]}'s 1-session run, shared prefix = ${o.sharedOpening
          ? 'the first request (the identical first answer after it not counted)'
          : "system + tools + the first user message's shared block"}).`);
    }
  }
  const busy = results.flatMap((r) => r.turns.map((t, i) => ({ r, t, i }))).filter(({ t }) => t.otherLoad >= 0.1);
  if (busy.length > 0) {
    out.push('', `WARNING, other processes were busy during: ${busy.map(({ r, t, i }) => `${SERVER_NAMES[r.server]} ${r.sessions}s turn ${i + 1} (${t.otherLoad.toFixed(2)} cores)`).join('; ')}`);
  }
  return out.join('\n');
}

/** Prompt tokens all sessions share: with a shared opening its first request, else all before the own prompt. */
async function sharedPrefixTokens(server: RunningServer, traffic: Traffic, o: Options, systemAndTools: number): Promise<number> {
  if (o.sharedOpening) return countTokens(server, traffic.base, firstMessages(traffic, 0));
  const m0 = structuredClone(traffic.messages[0]);
  if (!Array.isArray(m0.content)) return systemAndTools;
  m0.content = m0.content.slice(0, m0.content.map((b) => b.type).lastIndexOf('text'));
  return m0.content.length > 0 ? countTokens(server, traffic.base, [m0]) : systemAndTools;
}

const pensieveEngine = (o: Options): Record<string, string> =>
  (o.pensieveFa === undefined ? {} : { flash_attention: JSON.stringify(o.pensieveFa) });

async function main(): Promise<void> {
  const o = parseOptions();
  const bin = o.servers.includes('llama') ? buildLlamaTools(['llama-server']) : '';
  const traffic = loadTraffic(o.maxTokens);
  const sizes: Record<string, string> = {};
  const results: Replay[] = [];
  let contextPerSlot = 0;

  for (const sessions of o.sessions) {
    const slots = Math.min(sessions, o.slots ?? sessions);
    for (const kind of o.servers) {
      const first = results.length === 0 && contextPerSlot === 0;
      // Context per slot: sized once from the first server's count of a whole session, rounded up to 4096.
      const slotContext = contextPerSlot || 65_536;
      log(`starting ${SERVER_NAMES[kind]} with ${slots} slot(s)`);
      const server = kind === 'pensieve'
        ? await startPensieve({ model: o.model, slots, contextPerSlot: slotContext, threads: o.threads, gpuLayers: o.gpuLayers, engine: pensieveEngine(o) })
        : await startLlamaServer({ bin, model: o.model, slots, contextPerSlot: slotContext, threads: o.threads, gpuLayers: o.gpuLayers, extraArgs: o.llamaArgs });
      try {
        if (first) {
          const probe: Message[] = [{ role: 'user', content: 'x' }];
          const { before, after } = await sizePrefix(traffic, o.prefixTokens, (system) => countTokens(server, { ...traffic.base, system }, probe));
          sizes.prefix = before === after
            ? `${after} tokens (fixture as captured)`
            : `${before} tokens in the fixture, grown to ${after} with ${traffic.grownParagraphs} filler paragraphs of 80 words in the system prompt`;
          sizes.prefix += ` (count_tokens of ${SERVER_NAMES[kind]} with a one-word user message)`;
          sizes.sharedTokens = String(await sharedPrefixTokens(server, traffic, o, after));
          // A whole session: grow the conversation without a server, to size the context.
          const whole = firstMessages(traffic, 0);
          for (let t = 1; t < o.turns; t++) {
            const { message, toolUses } = assistantTurn([{ type: 'text', text: filler(7, o.maxTokens) }], 0, t);
            whole.push(message, toolResults(toolUses, 0, t, o.newTokens));
          }
          const need = (await countTokens(server, traffic.base, whole)) + o.maxTokens * o.turns + 1024;
          contextPerSlot = Math.ceil(need / 4096) * 4096;
          log(`system + tools: ${sizes.prefix}; a whole session needs ${need} tokens: ${contextPerSlot} per slot`);
          // Restart with the context sized for the session.
          await server.stop();
          const again = kind === 'pensieve'
            ? await startPensieve({ model: o.model, slots, contextPerSlot, threads: o.threads, gpuLayers: o.gpuLayers, engine: pensieveEngine(o) })
            : await startLlamaServer({ bin, model: o.model, slots, contextPerSlot, threads: o.threads, gpuLayers: o.gpuLayers, extraArgs: o.llamaArgs });
          try {
            await warmUp(again, slots);
            results.push(await replay(again, kind, traffic, o, sessions));
          } finally {
            await again.stop();
          }
          continue;
        }
        await warmUp(server, slots);
        results.push(await replay(server, kind, traffic, o, sessions));
      } finally {
        await server.stop();
      }
    }
  }
  await dispatcher.close();
  console.log(report(o, results, sizes, contextPerSlot, bin));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});
