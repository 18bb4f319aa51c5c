// Graceful shutdown of the real CLI (`node dist/src/cli.js start`, built by `npm run build`) on the
// generated tiny model: SIGTERM lets generations finish within the grace period, answers those it cuts
// short with overloaded_error (so clients retry), and exits 0.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { projectRoot } from '../src/paths.js';
import { tinyModelPath } from './helpers/models.js';
import { longStream, postMessage, readJson, send, sseEvents, type SseEvent } from './helpers/http.js';

const cli = join(projectRoot, 'dist', 'src', 'cli.js');

interface Cli {
  child: ChildProcess;
  /** The server's URL, once it listens. */
  url: Promise<string>;
  /** Log lines (JSON) from stdout. */
  logs: Record<string, unknown>[];
  exit: Promise<number | null>;
  stderr: () => string;
}

function startCli(args: string[], env: Record<string, string> = {}): Cli {
  const child = spawn(process.execPath, [cli, 'start', ...args], {
    // No user config file: XDG_CONFIG_HOME points at an empty folder.
    env: { ...process.env, XDG_CONFIG_HOME: mkdtempSync(join(tmpdir(), 'pensieve-cfg-')), PENSIEVE_ENGINE_THREADS: '2', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += String(chunk)));
  const logs: Record<string, unknown>[] = [];
  const url = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      logs.push(entry);
      const listening = /^Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(String(entry.msg));
      if (listening) resolve(listening[1]!);
    });
    child.on('exit', () => reject(new Error(`the CLI exited before listening: ${stderr}`)));
  });
  url.catch(() => {}); // a test that expects an early exit never waits for it
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, url, logs, exit, stderr: () => stderr };
}

/** Starts a long stream once the model is loaded; resolves after its first text delta, with the rest of its events to come. */
async function streamUntilFirstDelta(server: Cli, maxTokens: number): Promise<{ seen: SseEvent[]; rest: AsyncGenerator<SseEvent> }> {
  const url = await server.url;
  while (!server.logs.some((l) => l.msg === 'ready')) await new Promise((resolve) => setTimeout(resolve, 100));
  const response = await postMessage(url, longStream(maxTokens));
  t.equal(response.statusCode, 200);
  const rest = sseEvents(response);
  const seen: SseEvent[] = [];
  for (;;) {
    const { value, done } = await rest.next();
    if (done) throw new Error('the stream ended before its first delta');
    seen.push(value);
    if (value.event === 'content_block_delta') return { seen, rest };
  }
}

async function drain(rest: AsyncGenerator<SseEvent>): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  for await (const event of rest) events.push(event);
  return events;
}

const model = await tinyModelPath();
const engineEnv = { PENSIEVE_ENGINE_SLOTS: '2', PENSIEVE_ENGINE_POOL_TOKENS: '16384' };

t.test('past the grace period, SIGTERM cancels the generation; the stream ends with an overloaded_error event, not a stop reason', async (t) => {
  const server = startCli(['--model', model, '--port', '0'], { ...engineEnv, PENSIEVE_SERVER_SHUTDOWN_GRACE_SECONDS: '0' });
  t.teardown(() => void server.child.kill('SIGKILL'));
  const { rest } = await streamUntilFirstDelta(server, 30000);
  server.child.kill('SIGTERM');
  const events = await drain(rest);
  t.match(events.at(-1), { event: 'error', data: { type: 'error', error: { type: 'overloaded_error', message: /shutting down/ } } });
  t.notOk(events.some((e) => e.event === 'message_delta' || e.event === 'message_stop'), 'a cut-short answer is not passed off as complete');
  t.equal(await server.exit, 0, server.stderr());
  t.ok(server.logs.some((l) => l.msg === 'cancelling running generations'));
  t.ok(server.logs.some((l) => l.msg === 'stopped'));
});

t.test('past the grace period, a non-streaming request cut short gets 529 overloaded_error', async (t) => {
  const server = startCli(['--model', model, '--port', '0'], { ...engineEnv, PENSIEVE_SERVER_SHUTDOWN_GRACE_SECONDS: '0' });
  t.teardown(() => void server.child.kill('SIGKILL'));
  const url = await server.url;
  while (!server.logs.some((l) => l.msg === 'ready')) await new Promise((resolve) => setTimeout(resolve, 100));
  const answer = postMessage(url, { ...longStream(30000), stream: false });
  const generating = async () => (await readJson(await send(`${url}/health`))).slotsBusy === 1;
  while (!(await generating())) await new Promise((resolve) => setTimeout(resolve, 50));
  server.child.kill('SIGTERM');
  const response = await answer;
  t.equal(response.statusCode, 529);
  t.equal(response.headers['retry-after'], '1');
  t.match(await readJson(response), { type: 'error', error: { type: 'overloaded_error', message: /shutting down/ } });
  t.equal(await server.exit, 0, server.stderr());
});

t.test('within the grace period, a running generation finishes before the server exits', async (t) => {
  const server = startCli(['--model', model, '--port', '0'], { ...engineEnv, PENSIEVE_SERVER_SHUTDOWN_GRACE_SECONDS: '600' });
  t.teardown(() => void server.child.kill('SIGKILL'));
  const { rest } = await streamUntilFirstDelta(server, 64);
  server.child.kill('SIGTERM');
  const events = await drain(rest);
  t.same(events.slice(-2).map((e) => e.event), ['message_delta', 'message_stop']);
  t.match(events.at(-2)!.data, { delta: { stop_reason: 'max_tokens' }, usage: { output_tokens: 64 } });
  t.equal(await server.exit, 0, server.stderr());
  t.notOk(server.logs.some((l) => l.msg === 'cancelling running generations'));
});

t.test('listening on a non-loopback address with the default key exits 2 with a clear message', async (t) => {
  const server = startCli(['--model', model, '--host', '0.0.0.0', '--port', '0']);
  t.equal(await server.exit, 2);
  t.match(server.stderr(), /pensieve: refusing to listen on 0\.0\.0\.0 with the default API key/);
});
