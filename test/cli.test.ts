// The `pensieve` command run as a child process (through tsx, so no build is needed): usage errors and
// exit codes, config provenance, validate, pull/models/rm against a fake hub, status, and a daemon's
// start, status and stop. Each run gets its own HOME and XDG folders, so no real user file or model
// folder is touched.
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { projectRoot } from '../src/paths.js';
import { writeGguf } from '../src/model/gguf.js';
import { CATALOGUE } from '../src/model/catalogue.js';
import { startFakeHub, type FakeHub } from './helpers/fake-hub.js';
import { tinyModelPath } from './helpers/models.js';
import { tinyVisionModel } from './helpers/vision.js';

const CLI = path.join(projectRoot, 'src', 'cli.ts');
const TSX = import.meta.resolve('tsx');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A clean environment: none of this machine's PENSIEVE_* or HF_* variables, folders under `home`. */
function envFor(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(PENSIEVE_|HF_|XDG_)/.test(k)));
  return {
    ...env,
    HOME: home,
    XDG_CONFIG_HOME: path.join(home, 'config'),
    XDG_CACHE_HOME: path.join(home, 'cache'),
    XDG_STATE_HOME: path.join(home, 'state'),
    PENSIEVE_ENGINE_THREADS: '1',
    ...extra,
  };
}

function pensieve(home: string, args: string[], extra: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', TSX, CLI, ...args], { env: envFor(home, extra) }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }),
    );
  });
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

let tiny: string;
let hub: FakeHub;
t.before(async () => {
  tiny = await tinyModelPath();
  hub = await startFakeHub({
    'acme/tiny-GGUF/tiny-Q4_K_M.gguf': readFileSync(tiny),
    'acme/junk/junk.gguf': Buffer.from('not a model'),
    // The catalogue's default, served by the fake hub at its real repo and file name.
    'unsloth/Qwen3-4B-Instruct-2507-GGUF/Qwen3-4B-Instruct-2507-Q4_K_M.gguf': readFileSync(tiny),
  });
});
t.teardown(() => hub.close());

t.test('usage: help for every command, errors exit 2', async (t) => {
  const home = t.testdir();
  const top = await pensieve(home, []);
  t.equal(top.code, 0);
  t.match(top.stdout, /^Usage: pensieve <command>/);
  for (const command of ['start', 'stop', 'status', 'config', 'validate', 'pull', 'models', 'rm']) {
    const run = await pensieve(home, [command, '--help']);
    t.equal(run.code, 0, `${command} --help`);
    t.match(run.stdout, new RegExp(`^Usage: pensieve ${command}`));
    t.match(run.stdout, /Exit codes: 0/);
  }
  const cases: [string[], RegExp][] = [
    [['frobnicate'], /unknown command: frobnicate/],
    [['start', '--bogus'], /Unknown option '--bogus'/],
    [['start', '--port', 'x'], /--port must be an integer/],
    [['start', '--model', path.join(home, 'nothere.gguf')], /model file not found/],
    [['rm'], /rm takes one model reference/],
    [['pull', './model.gguf'], /not a model reference: \.\/model\.gguf/],
    [['models', 'extra'], /models takes no arguments/],
    [['stop', '--timeout', 'soon'], /--timeout must be a number/],
  ];
  for (const [args, message] of cases) {
    const run = await pensieve(home, args);
    t.equal(run.code, 2, args.join(' '));
    t.match(run.stderr, message);
  }
});

t.test('config: values with their sources; an invalid layer exits 2 naming it', async (t) => {
  const home = t.testdir({
    config: { pensieve: { 'pensieve.toml': '[engine]\nqueue_length = 5\n' } },
    'x.toml': '[engine]\nslots = 8\n',
    'bad.toml': '[engine]\nslots = "many"\n',
  });
  const user = await pensieve(home, ['config']);
  t.equal(user.code, 0);
  t.match(user.stdout, new RegExp(`queue_length = 5 +# user file ${path.join(home, 'config', 'pensieve', 'pensieve.toml')}`));

  const file = path.join(home, 'x.toml');
  const run = await pensieve(home, ['config', '--config', file, '--port', '9000'], { PENSIEVE_ENGINE_THREADS: '3' });
  t.equal(run.code, 0);
  t.match(run.stdout, /\[engine\]/);
  t.match(run.stdout, new RegExp(`slots = 8 +# --config ${file}`));
  t.match(run.stdout, /port = 9000 +# flag/);
  t.match(run.stdout, /threads = 3 +# env PENSIEVE_ENGINE_THREADS/);
  t.match(run.stdout, /batch_size = 512 +# default/);
  t.match(run.stdout, new RegExp(`folder = "" +# default \\(${path.join(home, 'cache', 'pensieve', 'models')}\\)`));
  t.match(run.stdout, /"claude-\*" = "default" +# default/);
  t.notMatch(run.stdout, /queue_length = 5/, 'the user file is not read with --config');

  const json = JSON.parse((await pensieve(home, ['config', '--json', '--port', '9000'])).stdout);
  t.same(json['server.port'], { value: 9000, source: 'flag' });
  t.same(json['engine.queue_length'], { value: 5, source: `user file ${path.join(home, 'config', 'pensieve', 'pensieve.toml')}` });

  const secret = await pensieve(home, ['config'], { PENSIEVE_SERVER_API_KEYS: 'sk-very-secret-1234' });
  t.match(secret.stdout, /api_keys = \[ "\*\*\*\*1234" \]/, 'a secret key is masked');
  t.notMatch(secret.stdout, /very-secret/);
  const shown = await pensieve(home, ['config', '--show-secrets'], { PENSIEVE_SERVER_API_KEYS: 'sk-very-secret-1234' });
  t.match(shown.stdout, /api_keys = \[ "sk-very-secret-1234" \]/, '--show-secrets prints it');
  const bad = await pensieve(home, ['config', '--config', path.join(home, 'bad.toml')]);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /bad\.toml: engine\.slots must be an integer/);
  const env = await pensieve(home, ['config'], { PENSIEVE_ENGINE_SLOTS: '0' });
  t.equal(env.code, 2);
  t.match(env.stderr, /env PENSIEVE_ENGINE_SLOTS: must be >= 1/);
});

t.test('validate: a good model, garbage, a model too big for memory, a model not downloaded', async (t) => {
  const home = t.testdir({ 'garbage.gguf': '<html>502 Bad Gateway</html>' });
  const good = await pensieve(home, ['validate', '--model', tiny]);
  t.equal(good.code, 0, good.stderr);
  t.match(good.stdout, /config: ok\nmodel: .*tiny-qwen2\.gguf\n {2}GGUF v3, architecture qwen2/);
  t.match(good.stdout, /\n {2}memory plan: .*: weights .* \+ KV cache .* \(f16, a pool of 16384 tokens shared by 4 slots\) \+ margin .*\. One session can grow to 4096 tokens \(the model's trained context\); 0 sessions of 32768 tokens fit at once\.\n/);
  t.match(good.stdout, /\nok\n$/);

  const garbage = await pensieve(home, ['validate', '--model', path.join(home, 'garbage.gguf')]);
  t.equal(garbage.code, 1);
  t.match(garbage.stderr, /garbage\.gguf is not a GGUF file/);

  // 1000 layers of 1000 KV heads: ~0.5 GB of KV per token, which no machine has for a pool of 8192 tokens.
  const huge = path.join(home, 'huge.gguf');
  await writeGguf(huge, {
    metadata: new Map([
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['llama.block_count', { type: 'uint32', value: 1000 }],
      ['llama.embedding_length', { type: 'uint32', value: 128000 }],
      ['llama.attention.head_count', { type: 'uint32', value: 1000 }],
    ]),
    tensors: [],
  });
  const big = await pensieve(home, ['validate', '--model', huge]);
  t.equal(big.code, 1);
  t.match(big.stderr, /huge\.gguf needs about .* GiB of (GPU )?memory for a pool of 8192 tokens of q4_0 KV cache, but /);
  t.match(big.stderr, /model\.check_memory = false skips this check/);
  const unchecked = await pensieve(home, ['validate', '--model', huge], { PENSIEVE_MODEL_CHECK_MEMORY: 'false' });
  t.equal(unchecked.code, 0);
  t.match(unchecked.stdout, /does not fit in memory, but model\.check_memory = false/);

  const missing = await pensieve(home, ['validate']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /qwen3-4b is not downloaded yet; `pensieve pull qwen3-4b`/);
});

t.test('validate: a vision model\'s projector is checked and counted; a file that is not one is refused', async (t) => {
  const home = t.testdir({});
  const vision = await tinyVisionModel();
  const seeing = await pensieve(home, ['validate', '--model', vision.model], { PENSIEVE_MODEL_MMPROJ: vision.mmproj });
  t.equal(seeing.code, 0, seeing.stderr);
  t.match(seeing.stdout, /\nprojector: .*\.gguf\n {2}mlp projector, .*: the model sees images\n/);

  const notProjector = await pensieve(home, ['validate', '--model', vision.model], { PENSIEVE_MODEL_MMPROJ: vision.model });
  t.equal(notProjector.code, 1);
  t.match(notProjector.stderr, /is not a multimodal projector \(its architecture is qwen2, not clip\)/);

  const gone = await pensieve(home, ['validate', '--model', vision.model], { PENSIEVE_MODEL_MMPROJ: path.join(home, 'none.gguf') });
  t.equal(gone.code, 1);
  t.match(gone.stderr, /projector file not found: .*none\.gguf/);
});

t.test('pull, models, validate and rm on a models folder, against a fake hub', async (t) => {
  const home = t.testdir();
  const env = { HF_ENDPOINT: hub.endpoint };
  const folder = path.join(home, 'cache', 'pensieve', 'models');
  const empty = await pensieve(home, ['models'], env);
  t.equal(empty.code, 0);
  t.equal(empty.stdout, `no models in ${folder}\n`);

  const pull = await pensieve(home, ['pull', 'acme/tiny-GGUF'], env);
  t.equal(pull.code, 0, pull.stderr);
  const file = path.join(folder, 'acme', 'tiny-GGUF', 'tiny-Q4_K_M.gguf');
  t.equal(pull.stdout, `${file}\n`);
  t.match(pull.stderr, /downloading http:\/\/127\.0\.0\.1:\d+\/acme\/tiny-GGUF\/resolve\/main\/tiny-Q4_K_M\.gguf/);
  t.match(pull.stderr, /tiny-Q4_K_M\.gguf: 100\.0% /, 'plain progress lines when stderr is not a terminal');
  t.match(pull.stderr, /downloaded .* \(sha256 [0-9a-f]{64}\)/);
  t.ok(readFileSync(file).equals(readFileSync(tiny)));
  const again = await pensieve(home, ['pull', 'acme/tiny-GGUF/tiny-Q4_K_M.gguf'], env);
  t.equal(again.code, 0);
  t.match(again.stderr, /already downloaded/);

  const list = await pensieve(home, ['models'], env);
  t.match(list.stdout, new RegExp(`^${folder}:\n {2}acme/tiny-GGUF/tiny-Q4_K_M\\.gguf +\\d+\\.\\d MiB\n$`));
  const json = JSON.parse((await pensieve(home, ['models', '--json'], env)).stdout);
  t.same(json, [{ name: 'acme/tiny-GGUF/tiny-Q4_K_M.gguf', path: file, size: readFileSync(tiny).length, partial: false }]);

  const valid = await pensieve(home, ['validate', '--model', 'acme/tiny-GGUF'], env);
  t.equal(valid.code, 0, valid.stderr);
  t.match(valid.stdout, new RegExp(`model: ${file.replace(/[.]/g, '\\.')}`));

  const junk = await pensieve(home, ['pull', 'acme/junk/junk.gguf'], env);
  t.equal(junk.code, 0, 'the hub serves it as it is');
  const junkCheck = await pensieve(home, ['validate', '--model', 'acme/junk/junk.gguf'], env);
  t.equal(junkCheck.code, 1);
  t.match(junkCheck.stderr, /is not a GGUF file/);

  const notFound = await pensieve(home, ['pull', 'acme/tiny-GGUF/nope.gguf'], env);
  t.equal(notFound.code, 1);
  t.match(notFound.stderr, /nope\.gguf: not found \(404\)/);

  const rm = await pensieve(home, ['rm', 'acme/tiny-GGUF/tiny-Q4_K_M.gguf'], env);
  t.equal(rm.code, 0);
  t.equal(rm.stdout, `deleted ${file}\n`);
  t.notOk(existsSync(file));
  const rmAgain = await pensieve(home, ['rm', 'acme/tiny-GGUF/tiny-Q4_K_M.gguf'], env);
  t.equal(rmAgain.code, 1);
  t.match(rmAgain.stderr, /no local model acme\/tiny-GGUF\/tiny-Q4_K_M\.gguf/);
});

t.test('models --available lists the catalogue; pull ALIAS takes one of them', async (t) => {
  const home = t.testdir();
  const env = { HF_ENDPOINT: hub.endpoint };
  const available = await pensieve(home, ['models', '--available'], env);
  t.equal(available.code, 0, available.stderr);
  for (const e of CATALOGUE) {
    t.match(available.stdout, new RegExp(`^${e.alias.replace(/[.]/g, '\\.')}( \\(default\\))? +${(e.downloadBytes / 1e9).toFixed(1)} GB `, 'm'), `${e.alias} with its download size`);
  }
  t.match(available.stdout, /^qwen3-4b \(default\) /m);
  t.match(available.stdout, /CONTEXT HERE \((CPU|.*free)/);
  t.match(available.stdout, /^qwen3-4b +81k q4_0 +153k q8_0 /m, 'expected context per machine size: 8 GiB, 16 GiB, ...');
  t.match(available.stdout, /Also: phi-3-mini/);
  const json = JSON.parse((await pensieve(home, ['models', '--available', '--json'], env)).stdout) as Record<string, unknown>[];
  t.same(json.map((e) => e.alias), CATALOGUE.map((e) => e.alias));
  t.match(json[0], { alias: 'qwen3-4b', default: true, ref: 'unsloth/Qwen3-4B-Instruct-2507-GGUF/Qwen3-4B-Instruct-2507-Q4_K_M.gguf', contextByMachine: { '16 GiB': '153k q8_0' } });

  const pull = await pensieve(home, ['pull', 'qwen3-4b'], env);
  t.equal(pull.code, 0, pull.stderr);
  const file = path.join(home, 'cache', 'pensieve', 'models', 'unsloth', 'Qwen3-4B-Instruct-2507-GGUF', 'Qwen3-4B-Instruct-2507-Q4_K_M.gguf');
  t.equal(pull.stdout, `${file}\n`);
  t.match(pull.stderr, /downloading http:\/\/127\.0\.0\.1:\d+\/unsloth\/Qwen3-4B-Instruct-2507-GGUF\/resolve\/main\/Qwen3-4B-Instruct-2507-Q4_K_M\.gguf/);
  const list = await pensieve(home, ['models'], env);
  t.match(list.stdout, /unsloth\/Qwen3-4B-Instruct-2507-GGUF\/Qwen3-4B-Instruct-2507-Q4_K_M\.gguf +\d+\.\d MiB +\(qwen3-4b\)/);
  const defaultPull = await pensieve(home, ['pull'], env);
  t.equal(defaultPull.code, 0);
  t.match(defaultPull.stderr, /already downloaded/, 'pull with no REF takes the default, qwen3-4b');
  const unknown = await pensieve(home, ['pull', 'no-such-alias'], env);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /not a model reference: no-such-alias \(expected owner\/repo, owner\/repo\/file\.gguf or an alias: qwen3-4b, /);
});

t.test('status reads /health: ready, loading, not running, something else', async (t) => {
  const home = t.testdir();
  let health: { code: number; body: string } = { code: 200, body: '' };
  const server: Server = createServer((_req, res) => res.writeHead(health.code, { 'content-type': 'application/json' }).end(health.body));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => server.close(resolve)));
  const port = String((server.address() as AddressInfo).port);

  health = { code: 200, body: JSON.stringify({ status: 'ok', model: 'tiny', slotsBusy: 1, queued: 0, memory: { rss: 1234 } }) };
  const ready = await pensieve(home, ['status', '--port', port]);
  t.equal(ready.code, 0);
  t.match(ready.stdout, new RegExp(`^running at http://127\\.0\\.0\\.1:${port}\n`));
  t.match(ready.stdout, /\n {2}model: tiny\n {2}slotsBusy: 1\n {2}queued: 0\n {2}memory\.rss: 1234\n/);
  t.same(JSON.parse((await pensieve(home, ['status', '--port', port, '--json'])).stdout).slotsBusy, 1);

  health = { code: 503, body: JSON.stringify({ status: 'loading' }) };
  const loading = await pensieve(home, ['status', '--port', port]);
  t.equal(loading.code, 4);
  t.match(loading.stdout, /not ready at .*\n {2}status: loading/);

  health = { code: 200, body: '<html>hello</html>' };
  const foreign = await pensieve(home, ['status', '--port', port]);
  t.equal(foreign.code, 1);
  t.match(foreign.stdout, /something that is not Pensieve answers/);

  const down = await pensieve(home, ['status', '--port', String(await freePort())]);
  t.equal(down.code, 3);
  t.match(down.stdout, /^not running at .*ECONNREFUSED/);
  const stop = await pensieve(home, ['stop', '--port', port]);
  t.equal(stop.code, 3, 'stop: no daemon on that port');
  t.match(stop.stderr, /not running/);
});

t.test('start --daemon, status, stop', async (t) => {
  const home = t.testdir();
  const port = String(await freePort());
  const env = { PENSIEVE_ENGINE_SLOTS: '1', PENSIEVE_ENGINE_POOL_TOKENS: '8192' };
  const started = await pensieve(home, ['start', '--daemon', '--model', tiny, '--port', port], env);
  t.equal(started.code, 0, started.stderr);
  const pidFile = path.join(home, 'state', 'pensieve', `pensieve-${port}.pid`);
  const logFile = path.join(home, 'state', 'pensieve', `pensieve-${port}.log`);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  t.match(started.stdout, new RegExp(`^pensieve is running at http://127\\.0\\.0\\.1:${port} \\(pid ${pid}\\); log: ${logFile.replace(/[.]/g, '\\.')}\n$`));
  t.teardown(() => {
    try {
      process.kill(pid, 'SIGKILL'); // only if the test failed before stopping it
    } catch {}
  });

  const status = await pensieve(home, ['status', '--port', port]);
  t.equal(status.code, 0);
  t.match(status.stdout, new RegExp(`^running at .* \\(daemon pid ${pid}\\)\n {2}status: ok\n {2}model: tiny-qwen2\n`));
  const twice = await pensieve(home, ['start', '--daemon', '--model', tiny, '--port', port], env);
  t.equal(twice.code, 1);
  t.match(twice.stderr, new RegExp(`already running on port ${port} \\(pid ${pid}\\)`));

  const stop = await pensieve(home, ['stop', '--port', port]);
  t.equal(stop.code, 0, stop.stderr);
  t.equal(stop.stdout, `stopped (pid ${pid})\n`);
  t.notOk(existsSync(pidFile));
  t.match(readFileSync(logFile, 'utf8'), /"msg":"ready"/, 'the server logged to the log file');
  t.equal((await pensieve(home, ['status', '--port', port])).code, 3);
});
