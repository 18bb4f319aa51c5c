#!/usr/bin/env node
// The `pensieve` command: dispatches to src/cli/<command>.ts and turns errors into exit codes.
// Commands are imported on demand, so that `status` does not load the engine and the addon.
import { ConfigError } from './config.js';
import { CliError, ExitCode } from './cli/errors.js';
import { networkMessage } from './model/download.js';

interface Command {
  /** An exit code (`claude` returns Claude Code's own), or none for a command that keeps running. */
  run(args: string[]): Promise<number | undefined>;
}

const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  claude: { summary: 'run Claude Code against the local server (starting it first when needed)', load: () => import('./cli/claude.js') },
  start: { summary: 'load a model and serve the Anthropic Messages API (--daemon: in the background)', load: () => import('./cli/start.js') },
  stop: { summary: 'stop the server started with start --daemon', load: () => import('./cli/stop.js') },
  status: { summary: "whether a server is running, and its /health", load: () => import('./cli/status.js') },
  config: { summary: 'print the effective config and where each value came from', load: () => import('./cli/config.js') },
  validate: { summary: 'check the config and the model file without starting', load: () => import('./cli/validate.js') },
  pull: { summary: 'download a model from Hugging Face', load: () => import('./cli/pull.js') },
  models: { summary: 'list downloaded models', load: () => import('./cli/models.js') },
  rm: { summary: 'delete a downloaded model', load: () => import('./cli/rm.js') },
};

const USAGE = `Usage: pensieve <command> [options]

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(10)}${c.summary}`)
  .join('\n')}

\`pensieve <command> --help\` describes a command's options.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or config,
3 not running (status, stop), 4 running but not ready (status).
`;

async function main(argv: string[]): Promise<number | undefined> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(USAGE);
    return ExitCode.Ok;
  }
  const command = COMMANDS[name];
  if (!command) throw new CliError(`unknown command: ${name}\n\n${USAGE}`, ExitCode.Usage);
  return (await command.load()).run(rest);
}

function exitCodeOf(err: unknown): ExitCode {
  if (err instanceof CliError) return err.code;
  if (err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) return ExitCode.Usage;
  return ExitCode.Failure;
}

/** Exits once stdout and stderr are flushed: writes to a pipe may still be queued (macOS). */
function exit(code: number): void {
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

main(process.argv.slice(2)).then(
  // A command that returns a code is done; `start` returns none and keeps serving.
  (code) => code !== undefined && exit(code),
  (err: unknown) => {
    process.stderr.write(`pensieve: ${networkMessage(err)}\n`);
    exit(exitCodeOf(err));
  },
);
