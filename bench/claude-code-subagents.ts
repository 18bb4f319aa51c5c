// Claude Code subagents (issue 14, item 4): what the requests of Claude Code's subagents (started by its Agent/Task
// tool, each with a system prompt of its own) share with the main session's and with each other's, in tokens of
// the prompt Pensieve renders, and what Pensieve reads from its prefix cache when they come in that order.
//
//   npm run bench:subagents -- [--model PATH] [--threads N] [--slots N] [--scenarios parallel,sequential,fork]
//
// Nothing of Claude Code's prompts is stored: for each scenario the real CLI (the @anthropic-ai/claude-code
// devDependency, print mode, a fresh temporary HOME and project folder) talks to a scripted fake Anthropic server
// written here, which keeps every request body in memory. The fake server answers the main session's first
// request(s) with calls of the tool that starts subagents (found by its input schema: description, prompt,
// subagent_type), every subagent's request with a short text and end_turn, and the main session's other requests
// with end_turn text. Scenarios:
//   parallel:   two general-purpose subagents started in one answer (two tool_use blocks; they run in the
//               background, Claude Code's default)
//   sequential: an Explore subagent, then (once its result is back) a Plan subagent, both in the foreground
//               (run_in_background: false): two types with different system prompts and the same tools
//   fork:       a subagent of type "fork", which inherits the main session's conversation, and a general-purpose
//               one, started together (the general-purpose one is compared with those of the parallel scenario:
//               another session, in another project folder and HOME)
//
// Then the recorded requests are replayed one at a time, in the order they came, into a fresh Pensieve (the model
// given, --slots slots, an empty cache), with max_tokens 1 and streaming; each response's usage says what was
// computed (input_tokens) and read from the cache (cache_read_input_tokens). Each request is also rendered and
// tokenized here exactly as Pensieve's preparation workers do it (toChatRequest, then ChatRenderer.prepare, with
// the model's vocabulary), to count the tokens every two requests share from the start, and where the first
// difference falls: in the system text, in the tools (the chat template writes them after the system text, inside
// the system turn), or in the messages. The server's count_tokens is checked against these counts.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadAddon, type NativeModel } from '../src/native.js';
import { ChatRenderer } from '../src/chat/renderer.js';
import { toChatRequest } from '../src/api/convert.js';
import type { CountTokensRequest } from '../src/api/schemas.js';
import { repoRoot } from './llama-tools.js';
import { positiveInt } from './options.js';
import { PENSIEVE_KEY, startPensieve } from './servers.js';

const CLAUDE = join(repoRoot, 'node_modules', '.bin', 'claude');
/**
 * The 100M shared model's prefill on the 2-core CI machine, idle: 790 tok/s for a short prompt
 * (../shared/models/README.md), and a cold 17,717-token prompt in 54.6 s (bench/RESULTS.md, Claude Code replay,
 * at 00f215c). Modelled as a cost per token plus attention's cost per (token, earlier token) pair:
 * 17,717 / 790 = 22.4 s, so the pairs cost (54.6 - 22.4) / (17,717^2 / 2) s each.
 */
const PREFILL_100M_TOK_S = 790;
const PAIR_100M_S = (54.6 - 17_717 / PREFILL_100M_TOK_S) / (17_717 ** 2 / 2);

/** Seconds the 100M model would take, on the idle CI machine, to compute tokens [cached, cached + computed). */
const estimate100M = (cached: number, computed: number): number =>
  computed / PREFILL_100M_TOK_S + PAIR_100M_S * ((cached + computed) ** 2 - cached ** 2) / 2;

type ScenarioName = 'parallel' | 'sequential' | 'fork';
const SCENARIOS: Record<ScenarioName, { title: string; prompt: string; spawns: SpawnStep[] }> = {
  parallel: {
    title: 'two general-purpose subagents started together (two tool_use blocks in one answer, in the background)',
    prompt: 'Use two subagents to look at this project.',
    spawns: [[
      { label: 'A', type: 'general-purpose', prompt: 'SUBAGENT-A: list the files in this folder and say one thing about them.' },
      { label: 'B', type: 'general-purpose', prompt: 'SUBAGENT-B: find the README of this project and summarize it in a line.' },
    ]],
  },
  sequential: {
    title: 'an Explore subagent, then a Plan subagent once its result is back (foreground, one after the other)',
    prompt: 'Look around this project, then plan a cleanup, with subagents.',
    spawns: [
      [{ label: 'A', type: 'Explore', prompt: 'SUBAGENT-A: find where the configuration is read.', foreground: true }],
      [{ label: 'B', type: 'Plan', prompt: 'SUBAGENT-B: plan how to clean up the configuration code.', foreground: true }],
    ],
  },
  fork: {
    title: 'a subagent of type "fork" (it inherits the main conversation) and a general-purpose one, started together',
    prompt: 'Fork yourself to look at this project, and start a helper.',
    spawns: [[
      { label: 'A', type: 'fork', prompt: 'SUBAGENT-A: list the files in this folder.' },
      { label: 'B', type: 'general-purpose', prompt: 'SUBAGENT-B: say which languages this project uses.' },
    ]],
  },
};

interface Spawn {
  label: string;
  type: string;
  prompt: string;
  foreground?: boolean;
}
/** The subagents the main session starts in one answer. */
type SpawnStep = Spawn[];

interface Options {
  model: string;
  threads: number;
  slots: number;
  scenarios: ScenarioName[];
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: { model: { type: 'string' }, threads: { type: 'string' }, slots: { type: 'string' }, scenarios: { type: 'string' } },
  });
  const scenarios = (values.scenarios ?? 'parallel,sequential,fork').split(',').map((s) => s.trim());
  for (const s of scenarios) if (!(s in SCENARIOS)) throw new Error(`--scenarios takes ${Object.keys(SCENARIOS).join(', ')}; got "${s}"`);
  return {
    model: resolve(values.model ?? join(repoRoot, '../shared/models/random-qwen2-tiny-10m-q8_0.gguf')),
    threads: positiveInt('threads', values.threads, 2),
    slots: positiveInt('slots', values.slots, 4),
    scenarios: scenarios as ScenarioName[],
  };
}

const log = (message: string): void => console.error(`[subagents] ${message}`);

// ---------------------------------------------------------------------------------------------------------------
// The fake Anthropic server and the CLI run

interface Body extends CountTokensRequest {
  max_tokens?: number;
  stream?: boolean;
  [key: string]: unknown;
}

/** One request the CLI sent, kept in memory only. */
interface Recorded {
  /** "main 1", "A 1" (subagent A's first request), ... */
  label: string;
  /** Undefined for the main session. */
  subagent?: Spawn;
  body: Body;
}

type Block = { type: 'text'; text: string } | { type: 'tool_use'; id: string; name: string; input: Record<string, unknown> };

function writeStream(res: ServerResponse, content: Block[], stopReason: 'end_turn' | 'tool_use'): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const event = (type: string, data: Record<string, unknown>): void => {
    res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  };
  event('message_start', {
    message: {
      id: `msg_fake_${Math.random().toString(36).slice(2)}`, type: 'message', role: 'assistant', model: 'claude-fake', content: [],
      stop_reason: null, stop_sequence: null, usage: { input_tokens: 1, output_tokens: 1 },
    },
  });
  content.forEach((block, index) => {
    if (block.type === 'text') {
      event('content_block_start', { index, content_block: { type: 'text', text: '' } });
      event('content_block_delta', { index, delta: { type: 'text_delta', text: block.text } });
    } else {
      event('content_block_start', { index, content_block: { type: 'tool_use', id: block.id, name: block.name, input: {} } });
      event('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: JSON.stringify(block.input) } });
    }
    event('content_block_stop', { index });
  });
  event('message_delta', { delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: 8 } });
  event('message_stop', {});
  res.end();
}

function writeJson(res: ServerResponse, content: Block[], stopReason: 'end_turn' | 'tool_use'): void {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({
    id: `msg_fake_${Math.random().toString(36).slice(2)}`, type: 'message', role: 'assistant', model: 'claude-fake', content,
    stop_reason: stopReason, stop_sequence: null, usage: { input_tokens: 1, output_tokens: 8 },
  }));
}

/** The text of all the system blocks, and of a message's blocks (text and tool results), for finding markers. */
const systemTexts = (body: Body): string[] =>
  body.system === undefined ? [] : typeof body.system === 'string' ? [body.system] : body.system.map((b) => b.text);
const messageText = (message: Body['messages'][number]): string => JSON.stringify(message.content);

/** The tool that starts subagents: the one whose input schema takes a description, a prompt and a subagent_type. */
function agentTool(body: Body): string | undefined {
  for (const tool of body.tools ?? []) {
    const props = (tool as { input_schema?: { properties?: Record<string, unknown> } }).input_schema?.properties ?? {};
    if ('prompt' in props && 'description' in props && 'subagent_type' in props) return (tool as { name: string }).name;
  }
  return undefined;
}

/**
 * Runs `claude -p` for one scenario against a fake server, and returns every /v1/messages request it sent, in order.
 */
async function recordScenario(name: ScenarioName): Promise<Recorded[]> {
  const scenario = SCENARIOS[name];
  const spawns = scenario.spawns.flat();
  const recorded: Recorded[] = [];
  const perLabel = new Map<string, number>();
  let mainRequests = 0;
  let toolName: string | undefined;
  let problem: string | undefined;

  const handle = (req: IncomingMessage, res: ServerResponse, raw: string): void => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'POST' && path === '/v1/messages/count_tokens') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ input_tokens: 1000 }));
      return;
    }
    if (req.method !== 'POST' || path !== '/v1/messages') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ type: 'error', error: { type: 'not_found_error', message: 'not here' } }));
      return;
    }
    const body = JSON.parse(raw) as Body;
    const reply = body.stream === false ? writeJson : writeStream;
    if (recorded.length >= 40) {
      problem = 'more than 40 requests: the script went wrong';
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ type: 'error', error: { type: 'invalid_request_error', message: problem } }));
      return;
    }
    // A subagent's billing header says cc_is_subagent=true; which subagent, its prompt's marker in its last message
    // (a fork's earlier messages are the main session's, with every subagent's prompt in its tool calls).
    const isSubagent = systemTexts(body).some((t) => /^x-anthropic-billing-header:.*cc_is_subagent=true/.test(t));
    if (isSubagent) {
      const last = messageText(body.messages[body.messages.length - 1]);
      const all = body.messages.map(messageText).join('\n');
      const spawn = spawns.find((s) => last.includes(s.prompt.split(':')[0] + ':')) ?? spawns.find((s) => all.includes(s.prompt.split(':')[0] + ':'));
      const letter = spawn?.label ?? '?';
      const n = (perLabel.get(letter) ?? 0) + 1;
      perLabel.set(letter, n);
      recorded.push({ label: `${letter} ${n}`, subagent: spawn, body });
      reply(res, [{ type: 'text', text: `Subagent ${letter} looked: nothing to report.` }], 'end_turn');
      return;
    }
    mainRequests++;
    recorded.push({ label: `main ${mainRequests}`, body });
    toolName ??= agentTool(body);
    const step = scenario.spawns[mainRequests - 1];
    if (step && toolName) {
      const blocks: Block[] = [{ type: 'text', text: 'Starting the subagents.' }];
      step.forEach((s, i) => blocks.push({
        type: 'tool_use', id: `toolu_fake_${name}_${mainRequests}_${i}`, name: toolName!,
        input: { description: `Subagent ${s.label}`, prompt: s.prompt, subagent_type: s.type, ...(s.foreground && { run_in_background: false }) },
      }));
      reply(res, blocks, 'tool_use');
      return;
    }
    if (step && !toolName) problem = 'no tool with description, prompt and subagent_type in the main request';
    reply(res, [{ type: 'text', text: 'Done.' }], 'end_turn');
  };

  const server = createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (raw += chunk));
    req.on('end', () => {
      try {
        handle(req, res, raw);
      } catch (err) {
        problem = `fake server: ${(err as Error).message}`;
        res.writeHead(500);
        res.end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const home = mkdtempSync(join(tmpdir(), 'pensieve-subagents-home-'));
  const project = mkdtempSync(join(tmpdir(), 'pensieve-subagents-project-'));
  try {
    const child = spawn(CLAUDE, ['-p', scenario.prompt], {
      cwd: project,
      env: {
        PATH: process.env.PATH ?? '', HOME: home,
        ANTHROPIC_BASE_URL: `http://127.0.0.1:${port}`, ANTHROPIC_AUTH_TOKEN: 'x', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const keep = (chunk: Buffer): void => void (output = (output + chunk.toString('utf8')).slice(-4000));
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => child.kill('SIGKILL'), 180_000);
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    clearTimeout(timer);
    if (problem) throw new Error(`${name}: ${problem}`);
    if (code !== 0) throw new Error(`${name}: claude exited with ${code}:\n${output}`);
    const missing = spawns.filter((s) => !recorded.some((r) => r.subagent === s));
    if (missing.length > 0) throw new Error(`${name}: no request from subagent(s) ${missing.map((s) => s.label).join(', ')}:\n${output}`);
  } finally {
    server.close();
    rmSync(home, { recursive: true, force: true });
    rmSync(project, { recursive: true, force: true });
  }
  return recorded;
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering: the prompt tokens, as Pensieve prepares them, and the sections they fall in

type Section = 'system text' | 'tools' | 'messages';

interface Rendered {
  tokens: Int32Array;
  /** The token index where the tools' part of the system turn starts, and where the messages start. */
  toolsStart: number;
  messagesStart: number;
  /** The request's tools (as Pensieve offers them to the template), for comparing tool sets. */
  toolsJson: string[];
}

class Renderer {
  private readonly vocab: NativeModel;
  private readonly renderer: ChatRenderer;
  private readonly pieceBytes: Uint32Array;

  constructor(model: string) {
    this.vocab = new (loadAddon().Model)(model, { vocabOnly: true });
    this.renderer = new ChatRenderer(this.vocab);
    const { offsets } = this.vocab.tokenPieces();
    this.pieceBytes = offsets;
  }

  render(body: Body): Rendered {
    const chat = toChatRequest(body);
    const { tokens } = this.renderer.prepare(chat);
    const text = Buffer.from(this.vocab.detokenize(tokens, true), 'utf8');
    // Qwen2.5's template (Pensieve's template for ChatML models): the system text, then "\n\n# Tools\n\n..." with
    // the tools, then <|im_end|> closes the system turn.
    const toolsAt = text.indexOf('\n\n# Tools\n\nYou may call one or more functions');
    const systemEnd = text.indexOf('<|im_end|>', Math.max(toolsAt, 0));
    return {
      tokens,
      toolsStart: toolsAt < 0 ? NaN : this.tokenAt(tokens, toolsAt),
      messagesStart: systemEnd < 0 ? NaN : this.tokenAt(tokens, systemEnd + '<|im_end|>'.length),
      toolsJson: (chat.tools ?? []).map((t) => JSON.stringify(t)),
    };
  }

  /** The index of the token that holds byte `at` of the detokenized prompt. */
  private tokenAt(tokens: Int32Array, at: number): number {
    let bytes = 0;
    for (let i = 0; i < tokens.length; i++) {
      bytes += this.pieceBytes[tokens[i] + 1] - this.pieceBytes[tokens[i]];
      if (bytes > at) return i;
    }
    return tokens.length;
  }
}

let renderer: Renderer;

function commonPrefix(a: Int32Array, b: Int32Array): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function sectionOf(r: Rendered, token: number): Section {
  if (token < r.toolsStart) return 'system text';
  if (token < r.messagesStart) return 'tools';
  return 'messages';
}

/** How two requests' tool lists compare. */
function toolsRelation(a: Rendered, b: Rendered): string {
  if (a.toolsJson.join('\n') === b.toolsJson.join('\n')) return 'identical';
  const name = (t: string): string => (JSON.parse(t) as { function: { name: string } }).function.name;
  const bSet = new Set(b.toolsJson);
  const bNames = new Set(b.toolsJson.map(name));
  const same = a.toolsJson.filter((t) => bSet.has(t)).length;
  const sameNames = a.toolsJson.filter((t) => bNames.has(name(t))).length;
  return `${same} identical, ${sameNames - same} same name with another text, ${a.toolsJson.length - sameNames} + ${b.toolsJson.length - sameNames} of their own`;
}

// ---------------------------------------------------------------------------------------------------------------
// Replay into Pensieve

interface Replayed {
  /** Sent at the same time as other requests (the first requests of subagents started by one answer). */
  together: boolean;
  computed: number;
  cached: number;
  ms: number;
  counted: number;
}

async function replayOne(baseUrl: string, body: Body, together: boolean): Promise<Replayed> {
  const headers = { 'content-type': 'application/json', 'x-api-key': PENSIEVE_KEY, 'anthropic-version': '2023-06-01' };
  const countRes = await fetch(`${baseUrl}/v1/messages/count_tokens`, {
    method: 'POST', headers,
    body: JSON.stringify({ model: body.model, system: body.system, messages: body.messages, tools: body.tools, tool_choice: body.tool_choice, thinking: body.thinking }),
  });
  const count = await countRes.json() as { input_tokens?: number };
  if (countRes.status !== 200) throw new Error(`count_tokens: ${countRes.status} ${JSON.stringify(count)}`);
  const started = performance.now();
  const res = await fetch(`${baseUrl}/v1/messages`, { method: 'POST', headers, body: JSON.stringify({ ...body, max_tokens: 1, stream: true }) });
  const text = await res.text();
  const ms = performance.now() - started;
  if (res.status !== 200) throw new Error(`messages: ${res.status} ${text.slice(0, 500)}`);
  const usage: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith('data:')) continue;
    const event = JSON.parse(line.slice(5)) as { type: string; usage?: Record<string, number>; message?: { usage?: Record<string, number> } };
    if (event.type === 'message_start') Object.assign(usage, event.message?.usage);
    if (event.type === 'message_delta') Object.assign(usage, event.usage); // final
  }
  return { together, computed: usage.input_tokens ?? NaN, cached: usage.cache_read_input_tokens ?? 0, ms, counted: count.input_tokens ?? NaN };
}

// ---------------------------------------------------------------------------------------------------------------
// Report

const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '-';

interface Row {
  rec: Recorded;
  r: Rendered;
  replay: Replayed;
}

/** Tokens a's prompt shares from its start with b's, and where in a the first difference falls. */
function shared(a: Row, b: Row): string {
  const n = commonPrefix(a.r.tokens, b.r.tokens);
  if (n === b.r.tokens.length) return `${fmt(n)} (all of ${b.rec.label})`;
  const section = sectionOf(a.r, n);
  const into = n - (section === 'system text' ? 0 : section === 'tools' ? a.r.toolsStart : a.r.messagesStart);
  return `${fmt(n)} (${section}, +${fmt(into)})`;
}

/** Tokens at the end of both prompts that are the same: identical text that comes after their first difference. */
function commonSuffix(a: Int32Array, b: Int32Array): number {
  let i = 0;
  while (i < a.length && i < b.length && a[a.length - 1 - i] === b[b.length - 1 - i]) i++;
  return i;
}

/** What a would share with b if it had b's system text (its tools and messages as they are). */
function whatIf(a: Row, b: Row): string {
  const r = renderer.render({ ...a.rec.body, system: b.rec.body.system });
  const n = commonPrefix(r.tokens, b.r.tokens);
  const section = sectionOf(r, n);
  return `${fmt(n)} (${section}, +${fmt(n - (section === 'system text' ? 0 : section === 'tools' ? r.toolsStart : r.messagesStart))})`;
}

function scenarioReport(name: ScenarioName, rows: Row[]): string {
  const out: string[] = [];
  out.push(`### ${name}: ${SCENARIOS[name].title}`, '');
  out.push('| request | type | prompt tokens | system text / tools / messages | shared with main 1 (first difference in) | shared with the other subagent | longest shared with an earlier request | read from cache | computed | ms | 100M, estimated |');
  out.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  const main1 = rows.find((x) => x.rec.label === 'main 1')!;
  const firstOf = (label: string): Row | undefined => rows.find((x) => x.rec.subagent?.label === label);
  rows.forEach((row, i) => {
    const { r, replay, rec } = row;
    const other = rec.subagent ? rows.find((x) => x.rec.subagent && x.rec.subagent.label !== rec.subagent!.label) : undefined;
    const earlier = rows.slice(0, i).reduce((best, x) => Math.max(best, commonPrefix(r.tokens, x.r.tokens)), 0);
    const sys = r.toolsStart;
    const tools = r.messagesStart - r.toolsStart;
    out.push(`| ${rec.label} | ${rec.subagent?.type ?? 'main'} | ${fmt(r.tokens.length)} | ${fmt(sys)} / ${fmt(tools)} / ${fmt(r.tokens.length - r.messagesStart)} | ` +
      `${row === main1 ? '-' : shared(row, main1)} | ${other ? shared(row, other) : '-'} | ${fmt(earlier)} | ${fmt(replay.cached)} | ${fmt(replay.computed)} | ` +
      `${fmt(replay.ms)}${replay.together ? '*' : ''} | ${fmt(estimate100M(replay.cached, replay.computed), 1)} s |`);
  });
  if (rows.some((x) => x.replay.together)) out.push('', '\\* sent together, as they came (started by one answer); the time is each one\'s own, from sending to its end.');
  out.push('');
  // The tool lists and system texts, compared.
  const subs = [...new Set(rows.filter((x) => x.rec.subagent).map((x) => x.rec.subagent!.label))].map(firstOf).filter((x): x is Row => !!x);
  const pairs: [Row, Row][] = subs.map((s) => [s, main1]);
  if (subs.length === 2) pairs.push([subs[1], subs[0]]);
  for (const [a, b] of pairs) {
    out.push(`- ${a.rec.label} (${a.rec.subagent!.type}) vs ${b.rec.label} (${b.rec.subagent?.type ?? 'main'}): tools ${toolsRelation(a.r, b.r)}; ` +
      `system text ${a.r.toolsStart === b.r.toolsStart && commonPrefix(a.r.tokens, b.r.tokens) >= a.r.toolsStart ? 'identical' : 'differs'}; ` +
      `they share ${shared(a, b)} tokens from the start, and their last ${fmt(commonSuffix(a.r.tokens, b.r.tokens))} tokens are the same.` +
      (a.r.toolsStart === b.r.toolsStart && commonPrefix(a.r.tokens, b.r.tokens) >= a.r.toolsStart ? '' :
        ` Given ${b.rec.label}'s system text, ${a.rec.label} would share ${whatIf(a, b)}.`));
  }
  const subRows = rows.filter((x) => x.rec.subagent);
  const computedBySubagents = subRows.reduce((s, x) => s + x.replay.computed, 0);
  out.push(`- Computed for the subagents: ${fmt(computedBySubagents)} tokens (100M model: ` +
    `${fmt(subRows.reduce((s, x) => s + estimate100M(x.replay.cached, x.replay.computed), 0), 1)} s, estimated); for the whole scenario: ` +
    `${fmt(rows.reduce((s, x) => s + x.replay.computed, 0))} of ${fmt(rows.reduce((s, x) => s + x.r.tokens.length, 0))} prompt tokens.`);
  const mismatch = rows.filter((x) => x.replay.counted !== x.r.tokens.length || x.replay.computed + x.replay.cached !== x.r.tokens.length);
  if (mismatch.length > 0) {
    out.push(`- Token counts differ between this renderer, count_tokens and usage for: ${mismatch
      .map((x) => `${x.rec.label} (${x.r.tokens.length} / ${x.replay.counted} / ${x.replay.computed + x.replay.cached})`).join(', ')}`);
  }
  return out.join('\n');
}

/**
 * Each scenario is another session, in a project folder and HOME of its own: what their main sessions' first requests
 * share, and their first subagent requests of one type.
 */
function acrossReport(all: [ScenarioName, Row[]][]): string {
  const out = ['### Across scenarios (sessions in different project folders and HOMEs)', ''];
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const [n1, rows1] = all[i];
      const [n2, rows2] = all[j];
      const pairs: [Row, Row][] = [[rows2.find((x) => x.rec.label === 'main 1')!, rows1.find((x) => x.rec.label === 'main 1')!]];
      for (const row of rows2) {
        if (!row.rec.subagent || !row.rec.label.endsWith(' 1')) continue;
        const same = rows1.find((x) => x.rec.subagent?.type === row.rec.subagent!.type && x.rec.label.endsWith(' 1'));
        if (same) pairs.push([row, same]);
      }
      for (const [a, b] of pairs) {
        out.push(`- ${n2} ${a.rec.label} (${a.rec.subagent?.type ?? 'main'}, ${fmt(a.r.tokens.length)} tokens) vs ${n1} ${b.rec.label}: ` +
          `${shared(a, b)} tokens shared from the start; tools ${toolsRelation(a.r, b.r)}.`);
      }
    }
  }
  return out.join('\n');
}

async function main(): Promise<void> {
  const o = parseOptions();
  const version = await new Promise<string>((r) => {
    const c = spawn(CLAUDE, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let s = '';
    c.stdout.on('data', (d: Buffer) => (s += d.toString()));
    c.once('exit', () => r(s.trim()));
  });
  const load = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const loads = [load()];
  renderer = new Renderer(o.model);
  const reports: string[] = [];
  const all: [ScenarioName, Row[]][] = [];
  for (const name of o.scenarios) {
    log(`${name}: recording claude -p against the fake server`);
    const recorded = await recordScenario(name);
    log(`${name}: ${recorded.length} requests (${recorded.map((r) => r.label).join(', ')}); replaying into Pensieve`);
    const server = await startPensieve({ model: o.model, slots: o.slots, contextPerSlot: 32768, threads: o.threads });
    const rows: Row[] = [];
    try {
      // The first requests of subagents started by one answer go together, as they come live; the rest one at a time.
      const step = (rec: Recorded): SpawnStep | undefined =>
        rec.subagent && rec.label.endsWith(' 1') ? SCENARIOS[name].spawns.find((s) => s.includes(rec.subagent!)) : undefined;
      for (let i = 0; i < recorded.length;) {
        let j = i + 1;
        while (step(recorded[i]) && j < recorded.length && step(recorded[j]) === step(recorded[i])) j++;
        const group = recorded.slice(i, j);
        const replays = await Promise.all(group.map((rec) => replayOne(server.baseUrl, rec.body, group.length > 1)));
        group.forEach((rec, k) => rows.push({ rec, r: renderer.render(rec.body), replay: replays[k] }));
        i = j;
      }
    } finally {
      await server.stop();
    }
    reports.push(scenarioReport(name, rows));
    all.push([name, rows]);
    loads.push(load());
  }
  if (all.length > 1) reports.push(acrossReport(all));
  console.log([
    `Claude Code ${version}; model ${o.model}; Pensieve with ${o.slots} slots, 32768 tokens of context each, ${o.threads} threads, ` +
    `an empty cache for each scenario; max_tokens 1. Load average (1, 5, 15 min) at the start and after each scenario: ${loads.join('; ')}.`,
    '',
    ...reports.flatMap((r) => [r, '']),
  ].join('\n'));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});
