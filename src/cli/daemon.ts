// `start --daemon`: runs `start` again as a detached child that logs to a file, records its pid, and
// returns once the server answers /health as ready, so that a script can use it right away.
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PensieveConfig } from '../config.js';
import { daemonFiles, runningDaemon } from './daemon-files.js';
import { CliError, ExitCode, UsageError } from './errors.js';
import { readHealth } from './health.js';
import { serverUrl } from './shared.js';

const POLL_MS = 250;
const LOG_TAIL_LINES = 20;

function logTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-LOG_TAIL_LINES).join('\n');
  } catch {
    return '';
  }
}

/**
 * `args` are start's own arguments; the child gets them without --daemon and with the model already
 * resolved (downloaded and checked here, in the foreground, where progress and errors are seen).
 */
export async function startDaemon(args: string[], config: PensieveConfig): Promise<ExitCode> {
  const { port, host } = config.server;
  if (port === 0) throw new UsageError('--daemon needs a fixed port (server.port is 0)');
  const files = daemonFiles(port);
  const running = runningDaemon(files);
  if (running !== undefined) throw new CliError(`a server is already running on port ${port} (pid ${running}); \`pensieve stop\` stops it`);

  const url = serverUrl(host, port);
  if ((await readHealth(url)).kind !== 'down') throw new CliError(`something already answers at ${url}`);

  mkdirSync(dirname(files.pid), { recursive: true });
  const log = openSync(files.log, 'a');
  const childArgs = [...process.execArgv, process.argv[1]!, 'start', ...args.filter((a) => a !== '--daemon'), '--model', config.model.path];
  const child = spawn(process.execPath, childArgs, { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  let exited: number | null | undefined;
  child.once('exit', (code, signal) => (exited = code ?? (signal ? 128 : 1)));
  child.unref();
  writeFileSync(files.pid, `${child.pid}\n`);

  for (;;) {
    await sleep(POLL_MS);
    if (exited !== undefined) {
      rmSync(files.pid, { force: true });
      throw new CliError(`the server exited during startup (code ${exited}); the end of ${files.log}:\n${logTail(files.log)}`);
    }
    const health = await readHealth(url);
    if (health.kind === 'ready') break;
  }
  process.stdout.write(`pensieve is running at ${url} (pid ${child.pid}); log: ${files.log}\n`);
  return ExitCode.Ok;
}
