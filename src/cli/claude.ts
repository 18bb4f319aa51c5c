// `pensieve claude [claude arguments...]`: Claude Code on the local server. Finds the server the config
// names, or starts it in the background (`start --daemon`) and waits until it is ready, then runs the
// `claude` CLI with the environment that makes it work (claude-env.ts), passing its stdio through and
// returning its exit code.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { claudeEnvironment } from './claude-env.js';
import { CliError } from './errors.js';
import { readHealth } from './health.js';
import { help, loadWithFlags, SERVER_FLAGS_HELP, SERVER_OPTIONS, serverUrl } from './shared.js';

const USAGE = `Usage: pensieve claude [options] [claude arguments...]

Runs Claude Code (the \`claude\` CLI) against the local server: the server that the config names, started
in the background first when it is not running (as \`pensieve start --daemon\`; \`pensieve stop\` stops it).
Claude Code gets the server's address and key, non-essential traffic off, an API timeout long enough for
a cold prompt on this machine, and the server's real context window, so that it compacts a conversation
before the server has to refuse it. Variables you set yourself are kept (but the address and key).
Everything after the options goes to claude: \`pensieve claude -p "hello"\`, \`pensieve claude -- --help\`.

Options (before claude's arguments):
  --model REF      the model, when the server has to be started (as for start)
${SERVER_FLAGS_HELP}

Exit codes: claude's own; 1 the server could not be started or claude is not installed, 2 bad usage or config.
`;

const OPTIONS = { ...SERVER_OPTIONS, model: { type: 'string' } } as const;

/** Pensieve's own options come first; the first argument that is not one (or `--`) starts claude's. */
function splitArgs(args: string[]): { own: string[]; rest: string[] } {
  const own: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--') return { own, rest: args.slice(i + 1) };
    const name = arg.replace(/^--?/, '').split('=')[0];
    if (!arg.startsWith('-') || !(name in OPTIONS || name === 'h')) return { own, rest: args.slice(i) };
    own.push(arg);
    const takesValue = name in OPTIONS && OPTIONS[name as keyof typeof OPTIONS].type === 'string' && !arg.includes('=');
    if (takesValue && i + 1 < args.length) own.push(args[++i]);
  }
  return { own, rest: [] };
}

/** The `claude` executable on PATH. */
function findClaude(env: NodeJS.ProcessEnv): string {
  const names = process.platform === 'win32' ? ['claude.exe', 'claude.cmd'] : ['claude'];
  for (const dir of (env.PATH ?? '').split(delimiter).filter(Boolean)) {
    for (const name of names) {
      try {
        accessSync(join(dir, name), constants.X_OK);
        return join(dir, name);
      } catch {
        // not here
      }
    }
  }
  throw new CliError('Claude Code (the `claude` command) is not on PATH. Install it with `npm install -g @anthropic-ai/claude-code` ' +
    '(see https://docs.claude.com/en/docs/claude-code/setup), then run `pensieve claude` again.');
}

/** Starts the server in the background with the same options; its messages go to stderr. */
function startServer(own: string[]): Promise<void> {
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'start', '--daemon', ...own], { stdio: ['ignore', 2, 2] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new CliError(`the server could not be started (pensieve start --daemon exited with ${code})`))));
  });
}

/** The ready server's /health, starting the server when nothing answers. */
async function readyServer(url: string, own: string[]): Promise<Record<string, unknown>> {
  let health = await readHealth(url);
  if (health.kind === 'down') {
    process.stderr.write(`pensieve: no server at ${url}; starting one\n`);
    await startServer(own);
    health = await readHealth(url);
  }
  for (; health.kind === 'not-ready' && health.body.status === 'loading'; health = await readHealth(url)) await sleep(500);
  if (health.kind === 'ready') return health.body;
  if (health.kind === 'foreign') throw new CliError(`something that is not Pensieve answers at ${url}`);
  throw new CliError(`the server at ${url} is not ready: ${health.kind === 'down' ? health.reason : JSON.stringify(health.body)}`);
}

export async function run(args: string[]): Promise<number> {
  const { own, rest } = splitArgs(args);
  const { values } = parseArgs({ args: own, options: OPTIONS });
  if (values.help) return help(USAGE);
  const { config } = loadWithFlags(values);
  const url = serverUrl(config.server.host, config.server.port);
  const health = await readyServer(url, own);
  const env = claudeEnvironment({
    url,
    key: config.server.apiKeys[0] ?? '',
    maxContext: Number(health.maxContext),
    prefillTokensPerSecond: Number(health.prefillTokensPerSecond) || 0,
  }, process.env);
  const child = spawn(findClaude(env), rest, { stdio: 'inherit', env });
  // Ctrl-C reaches claude from the terminal; this process only waits for it.
  const ignore = (): void => {};
  process.on('SIGINT', ignore);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      process.off('SIGINT', ignore);
      resolve(code ?? (signal ? 128 : 1));
    });
  });
}
