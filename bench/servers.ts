// Starting and stopping HTTP servers for benchmarks: Pensieve's own CLI and llama.cpp's llama-server, as child
// processes on free loopback ports, with their CPU time readable from /proc (so a benchmark can tell its own
// load from other processes').
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './llama-tools.js';

export const PENSIEVE_KEY = 'pensieve-local-key';

/** A port that was free a moment ago (bound to 0 and released). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

export interface RunningServer {
  readonly name: string;
  readonly baseUrl: string;
  readonly pid: number;
  /** The last lines the process wrote (stdout and stderr), for error messages. */
  tail(): string;
  stop(): Promise<void>;
}

/**
 * With PENSIEVE_BENCH_LOGS=DIR, every server's output is appended to DIR/NAME.log, and Pensieve logs at info level
 * (a line per request with its queue, prefill and decode times): for finding where a benchmark's time went.
 */
const logDir = process.env.PENSIEVE_BENCH_LOGS;

function launch(name: string, command: string, args: string[], port: number, cleanup?: () => void): RunningServer {
  const child: ChildProcess = spawn(command, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-20_000);
    if (logDir) appendFileSync(join(logDir, `${name}.log`), chunk);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited = false;
  const exit = new Promise<void>((r) => child.once('exit', () => {
    exited = true;
    r();
  }));
  return {
    name,
    baseUrl: `http://127.0.0.1:${port}`,
    pid: child.pid ?? -1,
    tail: () => output.split('\n').slice(-40).join('\n'),
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        await exit;
        clearTimeout(timer);
      }
      cleanup?.();
    },
  };
}

/** Waits until GET /health answers 200 (the model is loaded), or throws with the server's last output. */
export async function waitHealthy(server: RunningServer, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${server.baseUrl}/health`);
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    if (!isAlive(server.pid)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const tail = server.tail();
  await server.stop();
  throw new Error(`${server.name} did not become healthy:\n${tail}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface PensieveOptions {
  model: string;
  slots: number;
  /** Tokens one session may use: the pool gets slots x this many cells (f16, as llama-server's default). */
  contextPerSlot: number;
  threads: number;
  /** Layers on the GPU (model.gpu_layers; default 0, CPU only). */
  gpuLayers?: number;
  /** More [engine] keys for the config file, e.g. { flash_attention: '"auto"' } (values as TOML). */
  engine?: Record<string, string>;
}

/**
 * Starts `node dist/src/cli.js start` with a temporary config file and an empty temporary prompt-cache folder
 * (so nothing cached by an earlier run or server is found), and waits for /health.
 */
export async function startPensieve(o: PensieveOptions): Promise<RunningServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'pensieve-bench-'));
  const config = join(dir, 'pensieve.toml');
  writeFileSync(config, [
    '[server]', 'host = "127.0.0.1"', `port = ${port}`, `api_keys = ["${PENSIEVE_KEY}"]`, '',
    '[model]', `path = ${JSON.stringify(o.model)}`, `gpu_layers = ${o.gpuLayers ?? 0}`, '',
    '[engine]', `slots = ${o.slots}`, `pool_tokens = ${o.slots * o.contextPerSlot}`, `max_context = ${o.contextPerSlot}`, 'kv_type = "f16"',
    `threads = ${o.threads}`,
    `queue_length = ${Math.max(o.slots, 8)}`, ...Object.entries(o.engine ?? {}).map(([k, v]) => `${k} = ${v}`), '',
    '[cache]', `folder = ${JSON.stringify(join(dir, 'cache'))}`, '',
    '[log]', `level = "${logDir ? 'info' : 'warn'}"`, '',
  ].join('\n'));
  const server = launch('pensieve', process.execPath,
    [join(repoRoot, 'dist', 'src', 'cli.js'), 'start', '--model', o.model, '--port', String(port), '--config', config],
    port, () => rmSync(dir, { recursive: true, force: true }));
  await waitHealthy(server);
  return server;
}

export interface LlamaServerOptions {
  bin: string;
  model: string;
  slots: number;
  contextPerSlot: number;
  threads: number;
  /** Layers on the GPU (-ngl; default 0, CPU only). */
  gpuLayers?: number;
  extraArgs: string[];
}

/** The llama-server command line (without the port), so a report can print it. */
export function llamaServerArgs(o: LlamaServerOptions): string[] {
  return [
    '-m', o.model, '--host', '127.0.0.1',
    '-t', String(o.threads), '-tb', String(o.threads), '-ngl', String(o.gpuLayers ?? 0),
    // -kvu: one pool of cells for all slots, as Pensieve's.
    '-np', String(o.slots), '-kvu', '-c', String(o.slots * o.contextPerSlot),
    '-b', '512', '-ub', '512',
    '--metrics', '--no-webui',
    ...o.extraArgs,
  ];
}

export async function startLlamaServer(o: LlamaServerOptions): Promise<RunningServer> {
  const port = await freePort();
  const server = launch('llama-server', join(o.bin, 'llama-server'), [...llamaServerArgs(o), '--port', String(port)], port);
  await waitHealthy(server);
  return server;
}

/** CPU time (clock ticks) of one process, all its threads, from /proc/PID/stat; 0 once it is gone. */
export function processTicks(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime + stime
  } catch {
    return 0;
  }
}

/** Busy CPU time (clock ticks) of the whole machine, from /proc/stat. */
export function machineTicks(): number {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  const idle = fields[3] + fields[4]; // idle + iowait
  return fields.slice(0, 8).reduce((a, b) => a + b, 0) - idle;
}
