// Claude Code live (issue 14): real Claude Code sessions against Pensieve and against llama.cpp's llama-server,
// same model, same llama.cpp source, same threads, same slots, in one run. Nothing of Claude Code's prompts is
// stored: the traffic is what the CLI (the @anthropic-ai/claude-code devDependency) sends at run time.
//
//   npm run bench:live -- [--model PATH] [--threads N] [--sessions 1,4] [--turns N] [--max-output N]
//                         [--servers pensieve,llama] [--context N]
//
// For each server and each session count N, the server is started fresh (N slots, an empty cache) and N Claude
// Code processes run at once, each in print mode with `--input-format stream-json`, so that one process gets
// several user turns: turn t+1 is written to its stdin once turn t's result is out. Each session has a first
// prompt of its own. The random-weight models never end a turn by themselves, so their answers are bounded with
// CLAUDE_CODE_MAX_OUTPUT_TOKENS.
//
// Claude Code talks to a recording proxy in front of the server. Per request: the prompt tokens, those computed
// (usage.input_tokens, as Anthropic counts them: not read from a cache) and those read from the cache
// (cache_read_input_tokens), from the stream's message_delta, and the time to first token (from the request to
// the first content_block_delta, through the proxy).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { buildLlamaTools, llamaSourceDir, repoRoot } from './llama-tools.js';
import { median, positiveInt } from './options.js';
import { PENSIEVE_KEY, startLlamaServer, startPensieve, type RunningServer } from './servers.js';

type ServerKind = 'pensieve' | 'llama';
const SERVER_NAMES: Record<ServerKind, string> = { pensieve: 'pensieve', llama: 'llama-server' };
// The shared models' ChatML template has no tool-call format; llama-server gets Qwen2.5's, as Pensieve uses.
const QWEN25_TEMPLATE = join(llamaSourceDir, 'models', 'templates', 'Qwen-Qwen2.5-7B-Instruct.jinja');
const CLAUDE = join(repoRoot, 'node_modules', '.bin', 'claude');
const TOPICS = ['the build scripts', 'the test layout', 'the config loader', 'the HTTP routes', 'the cache folder', 'the log format', 'the CLI flags', 'the README'];

interface Options {
  model: string;
  threads: number;
  sessions: number[];
  turns: number;
  maxOutput: number;
  servers: ServerKind[];
  /** Tokens of context one session may use (each server gets slots x this many cells). */
  context: number;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' }, threads: { type: 'string' }, sessions: { type: 'string' }, turns: { type: 'string' },
      'max-output': { type: 'string' }, servers: { type: 'string' }, context: { type: 'string' },
    },
  });
  const servers = (values.servers ?? 'pensieve,llama').split(',').map((s) => s.trim());
  for (const s of servers) if (s !== 'pensieve' && s !== 'llama') throw new Error(`--servers takes pensieve and llama, got "${s}"`);
  return {
    model: resolve(values.model ?? join(repoRoot, '../shared/models/random-qwen2-small-100m-q8_0.gguf')),
    threads: positiveInt('threads', values.threads, availableParallelism()),
    sessions: (values.sessions ?? '1,4').split(',').map((s) => positiveInt('sessions', s.trim(), 1)),
    turns: positiveInt('turns', values.turns, 3),
    maxOutput: positiveInt('max-output', values['max-output'], 16),
    servers: servers as ServerKind[],
    context: positiveInt('context', values.context, 32768),
  };
}

const log = (message: string): void => console.error(`[live] ${message}`);

/** One request as the proxy saw it. */
interface RequestRecord {
  session: string;
  /** The request's index within its session. */
  index: number;
  prompt: number;
  computed: number;
  cached: number;
  ttftMs: number;
}

/** Reads the usage and the first content delta out of an Anthropic SSE stream, as it passes through. */
class StreamWatch {
  private buffer = '';
  usage: Record<string, number> = {};
  firstDeltaAt?: number;

  push(chunk: Buffer): void {
    this.buffer += chunk.toString('utf8');
    let cut: number;
    while ((cut = this.buffer.search(/\r?\n\r?\n/)) >= 0) {
      const raw = this.buffer.slice(0, cut);
      this.buffer = this.buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
      const data = raw.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (!data) continue;
      const event = JSON.parse(data) as { type: string; usage?: Record<string, number>; message?: { usage?: Record<string, number> } };
      if (event.type === 'content_block_delta') this.firstDeltaAt ??= performance.now();
      // message_delta's usage is final; message_start's may be provisional.
      if (event.type === 'message_start') this.usage = { ...event.message?.usage };
      if (event.type === 'message_delta') Object.assign(this.usage, event.usage);
    }
  }
}

/** A proxy that forwards every request to `target` and records each /v1/messages stream. */
async function startProxy(target: string, records: RequestRecord[]): Promise<{ url: string; close(): Promise<void> }> {
  const perSession = new Map<string, number>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const started = performance.now();
    const session = String(req.headers['x-claude-code-session-id'] ?? '-');
    const upstream = new URL(req.url ?? '/', target);
    const forward = httpRequest(upstream, { method: req.method, headers: { ...req.headers, host: upstream.host } }, (response) => {
      res.writeHead(response.statusCode ?? 502, response.headers);
      const watch = req.url?.startsWith('/v1/messages') && !req.url.startsWith('/v1/messages/count_tokens') ? new StreamWatch() : undefined;
      response.on('data', (chunk: Buffer) => {
        watch?.push(chunk);
        res.write(chunk);
      });
      response.on('end', () => {
        res.end();
        if (!watch || response.statusCode !== 200) return;
        const index = perSession.get(session) ?? 0;
        perSession.set(session, index + 1);
        const computed = watch.usage.input_tokens ?? NaN;
        const cached = watch.usage.cache_read_input_tokens ?? 0;
        records.push({ session, index, prompt: computed + cached, computed, cached, ttftMs: (watch.firstDeltaAt ?? performance.now()) - started });
      });
    });
    forward.on('error', (err) => res.destroy(err));
    req.pipe(forward);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

/** One Claude Code process: `turns` user turns through stream-json, each sent once the previous result is out. */
function runSession(i: number, o: Options, baseUrl: string, home: string, cwd: string): Promise<void> {
  const child = spawn(CLAUDE, ['-p', '--input-format', 'stream-json', '--output-format', 'stream-json', '--verbose'], {
    cwd,
    env: {
      PATH: process.env.PATH ?? '', HOME: home,
      ANTHROPIC_BASE_URL: baseUrl, ANTHROPIC_AUTH_TOKEN: PENSIEVE_KEY,
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1', CLAUDE_CODE_MAX_OUTPUT_TOKENS: String(o.maxOutput), API_TIMEOUT_MS: '3600000',
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const say = (turn: number): void => {
    const text = turn === 0
      ? `Session ${i}: look at ${TOPICS[i % TOPICS.length]} and tell me what you would change first.`
      : `Turn ${turn + 1}: go on, and keep it short.`;
    child.stdin.write(`${JSON.stringify({ type: 'user', message: { role: 'user', content: text } })}\n`);
  };
  return new Promise((resolveSession, reject) => {
    let turn = 0;
    let buffer = '';
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
    child.stdout.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('utf8');
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (!line.startsWith('{') || (JSON.parse(line) as { type?: string }).type !== 'result') continue;
        if (++turn < o.turns) say(turn);
        else child.stdin.end();
      }
    });
    // Its exit code is 1 when the last answer hit the output bound: all turns answered is what counts.
    child.once('exit', (code) => (turn >= o.turns ? resolveSession() : reject(new Error(`session ${i}: claude exited with ${code} after ${turn} turns:\n${stderr}`))));
    say(0);
  });
}

interface Run {
  kind: ServerKind;
  sessions: number;
  records: RequestRecord[];
  wallMs: number;
}

async function runOnce(kind: ServerKind, sessions: number, o: Options, bin: string): Promise<Run> {
  log(`${SERVER_NAMES[kind]}: ${sessions} session(s) of ${o.turns} turns`);
  const common = { model: o.model, slots: sessions, contextPerSlot: o.context, threads: o.threads };
  const server: RunningServer = kind === 'pensieve'
    ? await startPensieve(common)
    : await startLlamaServer({ ...common, bin, extraArgs: ['--jinja', '--chat-template-file', QWEN25_TEMPLATE] });
  const records: RequestRecord[] = [];
  const proxy = await startProxy(server.baseUrl, records);
  // One user (HOME) working in one project folder, with several sessions open.
  const home = mkdtempSync(join(tmpdir(), 'pensieve-live-home-'));
  const project = mkdtempSync(join(tmpdir(), 'pensieve-live-project-'));
  const started = performance.now();
  try {
    await Promise.all(Array.from({ length: sessions }, (_, i) => runSession(i, o, proxy.url, home, project)));
  } finally {
    await proxy.close();
    await server.stop();
    rmSync(home, { recursive: true, force: true });
    rmSync(project, { recursive: true, force: true });
  }
  return { kind, sessions, records, wallMs: performance.now() - started };
}

/** The sum of the values that are numbers (a request whose stream carried no usage counts as none). */
const sum = (values: number[]): number => values.filter(Number.isFinite).reduce((a, b) => a + b, 0);
const fmt = (n: number, digits = 0): string => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '-');

function report(o: Options, runs: Run[]): string {
  const out: string[] = [];
  out.push(`model: ${o.model}; threads ${o.threads}; ${o.turns} user turns per session; CLAUDE_CODE_MAX_OUTPUT_TOKENS=${o.maxOutput}; ` +
    `slots = sessions, ${o.context} tokens of context per session (pensieve: engine.pool_tokens = slots x ${o.context}, max_context ${o.context}, ` +
    `kv_type f16; llama-server: -np SLOTS -kvu -c SLOTS*${o.context} --jinja --chat-template-file Qwen2.5)`);
  out.push('');
  out.push('| server | sessions | requests (without usage) | prompt tokens | computed | read from cache | computed / 1 session | median TTFT, first request | median TTFT, later requests | wall |');
  out.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const run of runs) {
    const one = runs.find((r) => r.kind === run.kind && r.sessions === 1);
    const computed = sum(run.records.map((r) => r.computed));
    const firsts = run.records.filter((r) => r.index === 0).map((r) => r.ttftMs);
    const later = run.records.filter((r) => r.index > 0).map((r) => r.ttftMs);
    const unreported = run.records.filter((r) => !Number.isFinite(r.computed)).length;
    out.push(`| ${SERVER_NAMES[run.kind]} | ${run.sessions} | ${run.records.length}${unreported ? ` (${unreported})` : ''} | ${fmt(sum(run.records.map((r) => r.prompt)))} | ${fmt(computed)} | ` +
      `${fmt(sum(run.records.map((r) => r.cached)))} | ${one ? fmt(computed / sum(one.records.map((r) => r.computed)), 2) : '-'} | ` +
      `${fmt(median(firsts))} ms | ${fmt(median(later))} ms | ${fmt(run.wallMs / 1000, 1)} s |`);
  }
  out.push('');
  out.push("Per request (a session's first request marked *): prompt / computed / cached tokens, TTFT ms");
  for (const run of runs) {
    out.push(`- ${SERVER_NAMES[run.kind]}, ${run.sessions} session(s): ` + run.records
      .map((r) => `${r.index === 0 ? '*' : ''}${r.prompt}/${r.computed}/${r.cached} ${fmt(r.ttftMs)}`).join('; '));
  }
  return out.join('\n');
}

async function main(): Promise<void> {
  const o = parseOptions();
  const bin = o.servers.includes('llama') ? buildLlamaTools(['llama-server']) : '';
  const runs: Run[] = [];
  for (const sessions of o.sessions) for (const kind of o.servers) runs.push(await runOnce(kind, sessions, o, bin));
  console.log(report(o, runs));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});
