// `pensieve status`: is a server running on the configured address, and what does its /health say.
import { parseArgs } from 'node:util';
import { daemonFiles, runningDaemon } from './daemon-files.js';
import { ExitCode } from './errors.js';
import { readHealth } from './health.js';
import { help, loadWithFlags, SERVER_FLAGS_HELP, SERVER_OPTIONS, serverUrl } from './shared.js';

const USAGE = `Usage: pensieve status [options]

Asks the server at the configured host and port for GET /health and prints what it reports
(model, slots busy, queue, throughput, cache hits, memory: whatever this server version has).

Options:
  --json           print /health's JSON as it is
${SERVER_FLAGS_HELP}

Exit codes: 0 running and ready, 1 something else answers there, 2 bad usage or config,
3 not running, 4 running but not ready (loading the model, or it failed to load).
`;

/** `a.b: value` lines of a JSON object, nested objects flattened. */
function lines(body: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(body).flatMap(([key, value]) =>
    typeof value === 'object' && value !== null && !Array.isArray(value)
      ? lines(value as Record<string, unknown>, `${prefix}${key}.`)
      : [`  ${prefix}${key}: ${typeof value === 'string' ? value : JSON.stringify(value)}`],
  );
}

export async function run(args: string[]): Promise<ExitCode> {
  const { values } = parseArgs({ args, options: { ...SERVER_OPTIONS, json: { type: 'boolean' } } });
  if (values.help) return help(USAGE);
  const { host, port } = loadWithFlags(values).config.server;
  const url = serverUrl(host, port);
  const health = await readHealth(url);
  const pid = runningDaemon(daemonFiles(port));
  const out = (text: string) => process.stdout.write(`${text}\n`);
  switch (health.kind) {
    case 'down':
      out(`not running at ${url} (${health.reason})`);
      return ExitCode.NotRunning;
    case 'foreign':
      out(`something that is not Pensieve answers at ${url} (GET /health: ${health.status})`);
      return ExitCode.Failure;
    default:
      if (values.json) out(JSON.stringify(health.body, null, 2));
      else {
        out(`${health.kind === 'ready' ? 'running' : 'not ready'} at ${url}${pid === undefined ? '' : ` (daemon pid ${pid})`}`);
        out(lines(health.body).join('\n'));
      }
      return health.kind === 'ready' ? ExitCode.Ok : ExitCode.NotReady;
  }
}
