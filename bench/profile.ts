// Profiles the server's main thread under load: `pensieve start` runs under clinic flame (0x: V8's sampling
// profiler), bench/load.ts drives it once the model is loaded, and when the load ends clinic stops the server
// and writes the flame graph (an HTML file) into --dest.
//
//   npm run profile -- [--model FILE] [--concurrency 4] [--duration 20] [--max-tokens 128] [--dest bench/.work/profile]
//
// The default model is the tiny random one (../shared/models, else the one the tests generate): its tokens
// come fast, so the main thread's work per token (rings, chat parsing, SSE) is what the profile shows.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from './llama-tools.js';
import { PENSIEVE_KEY } from './servers.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    concurrency: { type: 'string', default: '4' },
    duration: { type: 'string', default: '20' },
    'max-tokens': { type: 'string', default: '128' },
    dest: { type: 'string', default: join(repoRoot, 'bench', '.work', 'profile') },
    /** Internal: run by clinic once the server listens, at this URL. */
    drive: { type: 'string' },
  },
});

// NO_INSIGHT: without it clinic first asks, on a terminal, whether it may send usage data, and without one exits silently.
const run = (command: string, args: string[]): Promise<number> =>
  new Promise((done, fail) => spawn(command, args, { cwd: repoRoot, stdio: 'inherit', env: { ...process.env, NO_INSIGHT: '1' } })
    .once('error', fail).once('exit', (code) => done(code ?? 1)));

/** Clinic's --on-port step: waits for the model to load, then runs the load for the set time. */
async function drive(url: string): Promise<void> {
  for (let ready = false; !ready; await new Promise((r) => setTimeout(r, 250))) {
    ready = await fetch(`${url}/health`).then((r) => r.ok, () => false);
  }
  const code = await run(process.execPath, [join(repoRoot, 'dist', 'bench', 'load.js'), '--url', url, '--key', PENSIEVE_KEY,
    '--concurrency', values.concurrency, '--duration', values.duration, '--max-tokens', values['max-tokens']]);
  process.exit(code);
}

function defaultModel(): string {
  const candidates = [join(repoRoot, '..', 'shared', 'models', 'random-qwen2-tiny-10m-q8_0.gguf'), join(repoRoot, 'build', 'test-models', 'std0.4', 'tiny-qwen2.gguf')];
  const found = candidates.find((path) => existsSync(path));
  if (!found) throw new Error(`no model given and none of ${candidates.join(', ')} exists: pass --model FILE`);
  return found;
}

async function profile(): Promise<void> {
  const model = resolve(values.model ?? defaultModel());
  const dest = resolve(values.dest);
  mkdirSync(dest, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), 'pensieve-profile-'));
  const config = join(dir, 'pensieve.toml');
  writeFileSync(config, [
    '[server]', 'host = "127.0.0.1"', `api_keys = ["${PENSIEVE_KEY}"]`, '',
    '[engine]', 'slots = 4', 'pool_tokens = 16384', 'max_context = 4096', 'kv_type = "f16"', '',
    '[cache]', 'max_mb = 0', '', '[log]', 'level = "warn"', '',
  ].join('\n'));
  const before = new Set(readdirSync(dest));
  const onPort = `${process.execPath} ${join(repoRoot, 'dist', 'bench', 'profile.js')} --drive http://127.0.0.1:$PORT --concurrency ${values.concurrency} --duration ${values.duration} --max-tokens ${values['max-tokens']}`;
  const code = await run(join(repoRoot, 'node_modules', '.bin', 'clinic'), [
    'flame', '--open=false', '--dest', dest, '--on-port', onPort, '--',
    process.execPath, join(repoRoot, 'dist', 'src', 'cli.js'), 'start', '--model', model, '--port', '0', '--config', config,
  ]);
  rmSync(dir, { recursive: true, force: true });
  const written = readdirSync(dest).filter((name) => !before.has(name) && name.endsWith('.html'));
  if (code !== 0 || written.length === 0) throw new Error(`clinic flame failed (exit code ${code}); see its output above`);
  console.log(`flame graph: ${written.map((name) => join(dest, name)).join(', ')}`);
}

await (values.drive ? drive(values.drive) : profile());
