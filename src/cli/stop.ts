// `pensieve stop`: SIGTERM to the server that `start --daemon` started, then wait for it to exit.
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { daemonFiles, processAlive, runningDaemon } from './daemon-files.js';
import { CliError, ExitCode, UsageError } from './errors.js';
import { help, loadWithFlags, SERVER_FLAGS_HELP, SERVER_OPTIONS } from './shared.js';

const USAGE = `Usage: pensieve stop [options]

Stops the server that \`pensieve start --daemon\` started on this port: sends it SIGTERM (it finishes
running generations within server.shutdown_grace_seconds) and waits for it to exit.

Options:
  --timeout S      seconds to wait for the exit (default 60)
${SERVER_FLAGS_HELP}

Exit codes: 0 stopped, 1 still running after the timeout, 2 bad usage or config, 3 not running.
`;

const POLL_MS = 100;

export async function run(args: string[]): Promise<ExitCode> {
  const { values } = parseArgs({ args, options: { ...SERVER_OPTIONS, timeout: { type: 'string' } } });
  if (values.help) return help(USAGE);
  const timeout = Number(values.timeout ?? 60);
  if (!(timeout >= 0)) throw new UsageError(`--timeout must be a number of seconds, got ${values.timeout}`);
  const { port } = loadWithFlags(values).config.server;
  const files = daemonFiles(port);
  const pid = runningDaemon(files);
  if (pid === undefined) throw new CliError(`not running (no server started with --daemon on port ${port})`, ExitCode.NotRunning);

  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + timeout * 1000;
  while (processAlive(pid)) {
    if (Date.now() >= deadline)
      throw new CliError(`pid ${pid} is still running ${timeout}s after SIGTERM; see ${files.log}, or \`kill -9 ${pid}\``);
    await sleep(POLL_MS);
  }
  rmSync(files.pid, { force: true });
  process.stdout.write(`stopped (pid ${pid})\n`);
  return ExitCode.Ok;
}
