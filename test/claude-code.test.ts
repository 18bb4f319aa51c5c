// Claude Code itself (the @anthropic-ai/claude-code CLI) against the real server, on the shared model.
import t, { type Test } from 'tap';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../src/paths.js';
import { sharedModelPath } from './helpers/models.js';
import { endingModel } from './helpers/ending-model.js';
import { loadAddon } from '../src/native.js';
import { logSink, startTestServer, TEST_KEY, type TestServer } from './helpers/server.js';

const model = sharedModelPath('random-qwen2-tiny-10m-q8_0.gguf');

/** A new home folder for Claude Code (its settings and memory live there), removed when the tests end. */
function claudeHome(): string {
  const home = mkdtempSync(join(tmpdir(), 'claude-home-'));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  return home;
}

interface ClaudeResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI in the temp folder, as a user whose home is `home` (by default a new one). */
function claude(args: string[], env: Record<string, string>, home = claudeHome()): Promise<ClaudeResult> {
  const bin = join(projectRoot, 'node_modules', '.bin', 'claude');
  return new Promise((resolve) => {
    execFile(bin, args, { env: { PATH: process.env.PATH ?? '', HOME: home, ...env }, timeout: 240_000, cwd: tmpdir() },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }));
  });
}

/** Claude Code's environment for the test server. */
const claudeEnv = (server: TestServer): Record<string, string> => ({
  ANTHROPIC_BASE_URL: server.url,
  ANTHROPIC_AUTH_TOKEN: TEST_KEY,
  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
  // A random-weight model rarely ends its turn by itself: bound the answer so the turn ends. Claude
  // Code then reports that the answer hit its output limit, which is the expected end here.
  CLAUDE_CODE_MAX_OUTPUT_TOKENS: '48',
});

/** Checks Claude Code's JSON result: a result, no request failed, the answer streamed. */
function servedTurn(t: Test, result: ClaudeResult): void {
  const output = JSON.parse(result.stdout) as {
    type: string;
    api_error_status?: number | null;
    usage?: { output_tokens?: number; cache_read_input_tokens?: number };
  };
  t.equal(output.type, 'result', 'Claude Code printed its result');
  t.equal(output.api_error_status ?? null, null, 'no request failed at the HTTP level');
  t.ok((output.usage?.output_tokens ?? 0) > 0, `it received the streamed answer: ${result.stdout.slice(0, 400)}`);
}

t.test('claude -p completes a turn against the server', { skip: !model && 'no ../shared/models' }, async (t) => {
  const server = await startTestServer(model!, { slots: 2, pool_tokens: 65536, max_context: 32768 });
  t.teardown(() => server.close());
  const result = await claude(['-p', 'Say hello', '--output-format', 'json'], claudeEnv(server));
  const served = server.engine.status();
  t.ok(served.prefilledTokens > 5000, `the engine computed Claude Code's long prompt (${served.prefilledTokens} tokens)`);
  servedTurn(t, result);
});

t.test('a Claude Code session grows past what the old layout gave a slot: 4 slots share one pool', { skip: !model && 'no ../shared/models' }, async (t) => {
  const logs = logSink();
  // 4 slots in 65,536 cells: the old layout cut that into 4 x 16,384.
  const server = await startTestServer(model!, { slots: 4, pool_tokens: 65536, max_context: 65536 }, 5, { log: { level: 'info' }, logStream: logs.stream });
  t.teardown(() => server.close());
  const notes = Array.from({ length: 1200 }, (_, i) => `Note ${i}: the build step ${i % 7} writes file${i}.txt.`).join('\n');
  const result = await claude(['-p', `Summarize these notes.\n${notes}`, '--output-format', 'json'], claudeEnv(server));
  const prompts = logs.lines.filter((line) => line.msg === 'generation finished').map((line) => Number(line.promptTokens));
  t.ok(Math.max(...prompts) > 16384, `a request of ${Math.max(...prompts)} prompt tokens was served (requests: ${prompts.join(', ')})`);
  servedTurn(t, result);
});

t.test('sessions share their system prompt and tools in the cache; a session\'s next request reads all before its new messages', { skip: !model && 'no ../shared/models' }, async (t) => {
  const logs = logSink();
  const server = await startTestServer(model!, { slots: 2, pool_tokens: 65536, max_context: 32768 }, 5, { log: { level: 'info' }, logStream: logs.stream });
  t.teardown(() => server.close());
  const served = (): Array<{ prompt: number; cached: number }> => logs.lines.filter((line) => line.msg === 'generation finished')
    .map((line) => ({ prompt: Number(line.promptTokens), cached: Number(line.cachedPromptTokens) }));
  // One user: both sessions run with the same home folder (Claude Code's system prompt names its memory folder there).
  const home = claudeHome();
  servedTurn(t, await claude(['-p', 'Write a haiku about rivers', '--output-format', 'json'], claudeEnv(server), home));
  const first = served();
  t.ok(first.length >= 2, `session A made ${first.length} requests`);
  for (let i = 1; i < first.length; i++) {
    t.ok(first[i].cached >= first[i - 1].prompt, `A's request ${i + 1} read ${first[i].cached} of ${first[i].prompt} tokens: all of the previous prompt (${first[i - 1].prompt})`);
  }
  // Another session, another first prompt: Claude Code's billing header differs, the rest of the system prompt does not.
  servedTurn(t, await claude(['-p', 'List three prime numbers', '--output-format', 'json'], claudeEnv(server), home));
  const b = served()[first.length];
  t.ok(b.cached >= 0.8 * b.prompt, `B's first request read ${b.cached} of ${b.prompt} tokens from the cache (A's system prompt and tools)`);
});

/**
 * One Claude Code process fed several user turns through stream-json, each once the previous turn's result
 * is out (`command` runs claude, or `pensieve claude`). Resolves with every event it printed.
 */
function claudeTurns(command: string[], turns: string[], env: Record<string, string>, home = claudeHome()): Promise<Array<Record<string, unknown>>> {
  const child = spawn(command[0], [...command.slice(1), '-p', '--input-format', 'stream-json', '--output-format', 'stream-json', '--verbose'],
    { env: { PATH: `${join(projectRoot, 'node_modules', '.bin')}:${process.env.PATH ?? ''}`, HOME: home, ...env }, cwd: tmpdir(), stdio: ['pipe', 'pipe', 'pipe'] });
  const say = (text: string): boolean => child.stdin.write(`${JSON.stringify({ type: 'user', message: { role: 'user', content: text } })}\n`);
  const events: Array<Record<string, unknown>> = [];
  let results = 0;
  let buffer = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + String(chunk)).slice(-4000)));
  child.stdout.on('data', (chunk: Buffer) => {
    buffer += String(chunk);
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (!line.startsWith('{')) continue;
      const event = JSON.parse(line) as Record<string, unknown>;
      events.push(event);
      if (event.type !== 'result') continue;
      if (++results < turns.length) say(turns[results]);
      else child.stdin.end();
    }
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
  say(turns[0]);
  return new Promise((resolve, reject) => child.once('exit', () => {
    clearTimeout(timer);
    if (results === turns.length) resolve(events);
    else reject(new Error(`claude answered ${results} of ${turns.length} turns: ${stderr}`));
  }));
}

/** A user turn of about 2,300 tokens of notes: five of them outgrow a 20k context after Claude Code's 11k of system prompt and tools. */
const notes = (turn: number): string =>
  `Turn ${turn}: keep these notes.\n${Array.from({ length: 140 }, (_, i) => `Note ${turn}.${i}: step ${i % 7} writes file${i}.txt.`).join('\n')}`;

/** The served requests' prompt sizes, and how many prompts the server refused as too long, from its logs. */
function promptsOf(lines: Record<string, unknown>[]): { served: number[]; refused: number } {
  const served = lines.filter((line) => line.msg === 'generation finished').map((line) => Number(line.promptTokens));
  const refused = lines.filter((line) => /prompt is too long/.test(String(line.message))).length;
  return { served, refused };
}

/**
 * A server with a 20k context, on a copy of the shared model that ends its answers (Claude Code counts a
 * summary cut at max_tokens as a failed compaction; random weights never end one by themselves).
 */
async function smallContextServer(t: Test): Promise<{ server: TestServer; lines: Record<string, unknown>[] }> {
  const vocab = new (loadAddon().Model)(model!, { vocabOnly: true });
  const endOfTurn = vocab.tokenize('<|im_end|>', false, true)[0];
  vocab.free();
  const path = await endingModel(model!, join(t.testdir(), 'ending.gguf'), endOfTurn);
  const logs = logSink();
  const server = await startTestServer(path, { slots: 1, pool_tokens: 20480, max_context: 20480 }, 5, { log: { level: 'info' }, logStream: logs.stream });
  t.teardown(() => server.close());
  return { server, lines: logs.lines };
}

const compactions = (events: Array<Record<string, unknown>>): number => events.filter((e) => e.subtype === 'compact_boundary').length;
const TURNS = [1, 2, 3, 4, 5].map(notes);

t.test('a session that outgrows a 20k context: Claude Code compacts after the server refuses, and goes on', { skip: !model && 'no ../shared/models' }, async (t) => {
  const { server, lines } = await smallContextServer(t);
  const events = await claudeTurns([join(projectRoot, 'node_modules', '.bin', 'claude')], TURNS, { ...claudeEnv(server), CLAUDE_CODE_MAX_OUTPUT_TOKENS: '1000' });
  const { served, refused } = promptsOf(lines);
  t.ok(refused > 0, `the server refused ${refused} prompt(s) as too long`);
  t.ok(compactions(events) > 0, 'Claude Code compacted the conversation');
  t.ok(served.every((n) => n < 20480), `the compaction request and every later one were served: ${served.join(', ')}`);
  t.equal(events.filter((e) => e.type === 'result').length, TURNS.length, 'every turn got its answer');
});

t.test('with `pensieve claude`, Claude Code knows the 20k window and compacts before the server refuses anything', { skip: !model && 'no ../shared/models' }, async (t) => {
  const { server, lines } = await smallContextServer(t);
  const cli = [process.execPath, join(projectRoot, 'dist', 'src', 'cli.js'), 'claude', '--port', new URL(server.url).port];
  // No user config file (XDG_CONFIG_HOME is empty): the default key is the test server's.
  const events = await claudeTurns(cli, TURNS, { CLAUDE_CODE_MAX_OUTPUT_TOKENS: '1000', XDG_CONFIG_HOME: claudeHome() });
  const { served, refused } = promptsOf(lines);
  t.equal(refused, 0, 'no prompt was refused');
  t.ok(compactions(events) > 0, `Claude Code compacted on its own (prompts: ${served.join(', ')})`);
  t.equal(events.filter((e) => e.type === 'result').length, TURNS.length, 'every turn got its answer');
});
