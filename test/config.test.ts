import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'smol-toml';
import {
  ConfigError,
  defaultConfigFile,
  defaultModelsFolder,
  loadConfig,
  stateFolder,
  userConfigFile,
  type LoadConfigOptions,
} from '../src/config.js';

// A fresh, empty home for each test, so neither the real environment nor a real user file leaks in.
function setup(t: Test, files: Parameters<Test['testdir']>[0] = {}) {
  const dir = t.testdir(files);
  const env: NodeJS.ProcessEnv = { HOME: dir, XDG_CONFIG_HOME: path.join(dir, 'xdg'), XDG_CACHE_HOME: path.join(dir, 'cache') };
  const load = (opts: LoadConfigOptions = {}) => loadConfig({ ...opts, env: { ...env, ...opts.env } });
  return { dir, env, load };
}

const rejects = (t: Test, fn: () => unknown, message: RegExp) =>
  t.throws(fn, { constructor: ConfigError, name: 'ConfigError', message }, String(message));

const camel = (s: string) => s.replace(/_(.)/g, (_, c: string) => c.toUpperCase());

t.test('defaults load and match config/pensieve.toml', async (t) => {
  const { dir, load } = setup(t);
  const { config, sources } = load();
  const toml = parse(readFileSync(defaultConfigFile(), 'utf8')) as Record<string, Record<string, unknown>>;
  t.equal(path.basename(path.dirname(defaultConfigFile())), 'config');
  for (const [section, keys] of Object.entries(toml))
    for (const [key, value] of Object.entries(keys)) {
      const actual = (config as unknown as Record<string, Record<string, unknown>>)[section]![camel(key)];
      if (section === 'cache' && key === 'folder') t.equal(actual, path.join(dir, 'cache', 'pensieve'), 'platform cache folder');
      else if (section === 'model' && key === 'folder') t.equal(actual, path.join(dir, 'cache', 'pensieve', 'models'), 'models folder');
      else t.same(actual, value, `${section}.${key}`);
    }
  t.equal(config.engine.maxContext, 0);
  t.same(config.server.apiKeys, ['pensieve-local-key']);
  t.same(config.model.aliases, { 'claude-*': 'default' });
  t.equal(config.log.level, 'info');
  t.ok(Object.values(sources).every((s) => s === 'default'));
  t.equal(sources['engine.slots'], 'default');
  t.equal(sources['model.aliases.claude-*'], 'default');
});

t.test('an explicit file overrides the defaults; aliases merge', async (t) => {
  const { dir, load } = setup(t, {
    'x.toml': '[engine]\nslots = 8\n[model]\npath = "~/m.gguf"\n[model.aliases]\n"gpt-*" = "default"\n[cache]\nfolder = "c"\n',
  });
  const file = path.join(dir, 'x.toml');
  const { config, sources } = load({ file });
  t.equal(config.engine.slots, 8);
  t.equal(config.engine.batchSize, 512);
  t.equal(config.model.path, path.join(dir, 'm.gguf'), '~ expands to HOME');
  t.equal(config.cache.folder, path.resolve('c'));
  t.same(config.model.aliases, { 'claude-*': 'default', 'gpt-*': 'default' });
  t.equal(sources['engine.slots'], `--config ${file}`);
  t.equal(sources['model.aliases.gpt-*'], `--config ${file}`);
  t.equal(sources['engine.batch_size'], 'default');
});

t.test('the user file is read only without an explicit file', async (t) => {
  const { dir, env, load } = setup(t, {
    xdg: { pensieve: { 'pensieve.toml': '[server]\nport = 8000\n' } },
    'x.toml': '[log]\nlevel = "debug"\n',
  });
  const user = userConfigFile(env, 'linux');
  t.equal(user, path.join(dir, 'xdg', 'pensieve', 'pensieve.toml'));
  const a = load();
  t.equal(a.config.server.port, 8000);
  t.equal(a.sources['server.port'], `user file ${user}`);
  const b = load({ file: path.join(dir, 'x.toml') });
  t.equal(b.config.server.port, 7777);
  t.equal(b.config.log.level, 'debug');
});

t.test('user config file per platform', async (t) => {
  t.equal(userConfigFile({ HOME: '/h' }, 'linux'), '/h/.config/pensieve/pensieve.toml');
  t.equal(userConfigFile({ HOME: '/h' }, 'darwin'), '/h/Library/Application Support/pensieve/pensieve.toml');
  t.equal(userConfigFile({ APPDATA: 'C:\\U\\AppData\\Roaming' }, 'win32'), 'C:\\U\\AppData\\Roaming\\pensieve\\pensieve.toml');
});

t.test('environment variables override files, with coercion', async (t) => {
  const { dir, load } = setup(t, { 'x.toml': '[engine]\nslots = 8\nthreads = 2\n' });
  const file = path.join(dir, 'x.toml');
  const { config, sources } = load({
    file,
    env: {
      PENSIEVE_ENGINE_SLOTS: '16',
      PENSIEVE_SERVER_API_KEYS: 'a, b,',
      PENSIEVE_SERVER_REQUIRE_KEY_ON_LOOPBACK: 'false',
      PENSIEVE_MODEL_GPU_LAYERS: '-1',
      PENSIEVE_MODEL_ALIASES: 'gpt-*=default, *=default',
      PENSIEVE_LOG_LEVEL: 'warn',
      PENSIEVE_CACHE_FOLDER: '',
      PENSIEVE_GPU: 'cuda',
    },
  });
  t.equal(config.engine.slots, 16);
  t.equal(config.engine.threads, 2);
  t.same(config.server.apiKeys, ['a', 'b']);
  t.equal(config.server.requireKeyOnLoopback, false);
  t.same(config.model.aliases, { 'claude-*': 'default', 'gpt-*': 'default', '*': 'default' });
  t.equal(config.log.level, 'warn');
  t.equal(sources['engine.slots'], 'env PENSIEVE_ENGINE_SLOTS');
  t.equal(sources['engine.threads'], `--config ${file}`);
  t.equal(sources['server.api_keys'], 'env PENSIEVE_SERVER_API_KEYS');
  t.equal(sources['cache.folder'], 'default', 'an empty variable counts as unset');
});

t.test('flags win over everything; undefined flags are ignored', async (t) => {
  const { load } = setup(t);
  const { config, sources } = load({
    env: { PENSIEVE_ENGINE_SLOTS: '16', PENSIEVE_SERVER_PORT: '9000' },
    overrides: { engine: { slots: 2 }, server: { port: undefined }, model: { path: '/m.gguf' } },
  });
  t.equal(config.engine.slots, 2);
  t.equal(config.server.port, 9000);
  t.equal(config.model.path, '/m.gguf');
  t.equal(sources['engine.slots'], 'flag');
  t.equal(sources['server.port'], 'env PENSIEVE_SERVER_PORT');
  t.equal(sources['model.path'], 'flag');
});

t.test('errors name the key and the layer', async (t) => {
  const { dir, load } = setup(t, {
    'unknown.toml': '[engine]\nslotz = 4\n',
    'section.toml': '[engin]\nslots = 4\n',
    'type.toml': '[server]\nport = "80"\n',
    'range.toml': '[engine]\nslots = 257\n',
    'enum.toml': '[log]\nlevel = "loud"\n',
    'empty.toml': '[server]\napi_keys = [""]\n',
    'alias.toml': '[model.aliases]\n"a*b" = "default"\n',
    'bad.toml': '[engine]\nslots = 4\nbatch_size = [\n',
  });
  const f = (name: string) => path.join(dir, name);
  const file = (name: string) => () => load({ file: f(name) });
  const q = (name: string) => f(name).replace(/[.\\]/g, '\\$&');
  rejects(t, file('unknown.toml'), new RegExp(`^config ${q('unknown.toml')}: unknown key engine\\.slotz$`));
  rejects(t, file('section.toml'), new RegExp(`^config ${q('section.toml')}: unknown key engin$`));
  rejects(t, file('type.toml'), new RegExp(`^config ${q('type.toml')}: server\\.port must be an integer$`));
  rejects(t, file('range.toml'), new RegExp(`^config ${q('range.toml')}: engine\\.slots must be <= 256$`));
  rejects(t, file('enum.toml'), new RegExp(`^config ${q('enum.toml')}: log\\.level must be one of fatal, error`));
  rejects(t, file('empty.toml'), new RegExp(`^config ${q('empty.toml')}: server\\.api_keys\\.0 must not be empty$`));
  rejects(t, file('alias.toml'), new RegExp(`^config ${q('alias.toml')}: model\\.aliases pattern "a\\*b" is invalid`));
  rejects(t, file('bad.toml'), new RegExp(`^config ${q('bad.toml')}: TOML syntax error at line [34], column \\d+: `));
  rejects(t, file('missing.toml'), new RegExp(`^config ${q('missing.toml')}: cannot read \\(ENOENT\\)$`));

  rejects(t, () => load({ env: { PENSIEVE_ENGINE_SLOTS: 'many' } }), /^env PENSIEVE_ENGINE_SLOTS: must be an integer$/);
  rejects(t, () => load({ env: { PENSIEVE_ENGINE_SLOTS: '0' } }), /^env PENSIEVE_ENGINE_SLOTS: must be >= 1$/);
  rejects(t, () => load({ env: { PENSIEVE_SERVER_REQUIRE_KEY_ON_LOOPBACK: 'maybe' } }), /: must be true or false$/);
  rejects(t, () => load({ env: { PENSIEVE_MODEL_ALIASES: 'gpt' } }), /^env PENSIEVE_MODEL_ALIASES: must be pattern=target/);
  rejects(t, () => load({ env: { PENSIEVE_ENGINE_SLOTZ: '4' } }), /^env PENSIEVE_ENGINE_SLOTZ: unknown key/);

  rejects(t, () => load({ overrides: { engine: { slots: 1.5 } } }), /^flag: engine\.slots must be an integer$/);
  rejects(t, () => load({ overrides: { server: { hots: 'x' } } }), /^flag: unknown key server\.hots$/);
});

t.test('every problem of every layer is named at once', async (t) => {
  const { dir, load } = setup(t, {
    'issue.toml': '[server]\nport = "not-a-number"\nnonsense_key = 1\n',
    'bad.toml': '[engine]\nslots = [\n',
    'many.toml': '[engine]\nslots = -1.5\nbatch_size = 256\n[model.aliases]\n"a*b" = "default"\n',
  });
  const f = (name: string) => path.join(dir, name);
  const problemsOf = (opts: LoadConfigOptions): string[] => {
    try {
      load(opts);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      t.equal(err.message, err.problems.join('\n'), 'the message lists the problems, one per line');
      return err.problems;
    }
    t.fail('no ConfigError');
    return [];
  };

  // The issue's example: the unknown key no longer hides the bad port.
  const issue = problemsOf({ file: f('issue.toml') });
  t.same(issue.sort(), [
    `config ${f('issue.toml')}: server.port must be an integer`,
    `config ${f('issue.toml')}: unknown key server.nonsense_key`,
  ]);

  // Problems in the file, the environment and the flags together; one line per key (-1.5 is not also
  // "must be >= 1", a bad alias pattern is not also "property name must be valid"); the file's valid
  // batch_size still reaches the cross-key checks.
  const many = problemsOf({
    file: f('many.toml'),
    env: { PENSIEVE_SERVER_PORT: 'x', PENSIEVE_ENGINE_THREADS: '-1', PENSIEVE_ENGINE_SLOTZ: '4', PENSIEVE_LOG_LEVELS: 'debug' },
    overrides: { server: { hots: 'x' } },
  });
  t.same(many, [
    `config ${f('many.toml')}: model.aliases pattern "a*b" is invalid: '*' may only come last`,
    `config ${f('many.toml')}: engine.slots must be an integer`,
    'env PENSIEVE_SERVER_PORT: must be an integer',
    'env PENSIEVE_ENGINE_THREADS: must be >= 0',
    'env PENSIEVE_ENGINE_SLOTZ: unknown key (not a PENSIEVE_<SECTION>_<KEY> setting)',
    'env PENSIEVE_LOG_LEVELS: unknown key (not a PENSIEVE_<SECTION>_<KEY> setting)',
    'flag: unknown key server.hots',
    `config: engine.ubatch_size (512, from default) must be <= engine.batch_size (256, from --config ${f('many.toml')})`,
    `config: engine.step_token_budget (512, from default) must be <= engine.batch_size (256, from --config ${f('many.toml')})`,
  ]);

  // A bad value is left out of the merge, so it adds no cross-key problem of its own.
  const env = problemsOf({ env: { PENSIEVE_ENGINE_BATCH_SIZE: '0' } });
  t.same(env, ['env PENSIEVE_ENGINE_BATCH_SIZE: must be >= 1']);

  // A file that does not parse is one problem; the other layers are still checked.
  const syntax = problemsOf({ file: f('bad.toml'), env: { PENSIEVE_ENGINE_SLOTS: '0', PENSIEVE_LOG_LEVEL: 'loud' } });
  t.equal(syntax.length, 3);
  t.match(syntax[0], /^config .*bad\.toml: TOML syntax error at line \d+, column \d+: /);
  t.same(syntax.slice(1), [
    'env PENSIEVE_ENGINE_SLOTS: must be >= 1',
    'env PENSIEVE_LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent',
  ]);

  // A single problem reads as before, with no list around it.
  rejects(t, () => load({ overrides: { engine: { slots: 0 } } }), /^flag: engine\.slots must be >= 1$/);
  t.same(problemsOf({ overrides: { engine: { slots: 0 } } }), ['flag: engine.slots must be >= 1']);
  t.same(new ConfigError('one').problems, ['one'], 'a ConfigError made from one message has it as its one problem');
});

t.test('cross-field checks after merging', async (t) => {
  const { dir, load } = setup(t, { 'x.toml': '[engine]\nbatch_size = 256\n' });
  const file = path.join(dir, 'x.toml');
  rejects(
    t,
    () => load({ file }),
    new RegExp(
      `^config: engine\\.ubatch_size \\(512, from default\\) must be <= engine\\.batch_size \\(256, from --config ${file.replace(/[.\\]/g, '\\$&')}\\)\n` +
        'config: engine\\.step_token_budget \\(512, from default\\) must be <= engine\\.batch_size \\(256, ',
    ),
  );
  const ok = load({ file, env: { PENSIEVE_ENGINE_UBATCH_SIZE: '256' }, overrides: { engine: { step_token_budget: 128 } } });
  t.equal(ok.config.engine.ubatchSize, 256);
  rejects(
    t,
    () => load({ file, env: { PENSIEVE_ENGINE_UBATCH_SIZE: '256' } }),
    /^config: engine\.step_token_budget \(512, from default\) must be <= engine\.batch_size/,
  );
});

t.test('models and state folders per platform; model.folder resolves', async (t) => {
  t.equal(defaultModelsFolder({ HOME: '/h' }, 'linux'), '/h/.cache/pensieve/models');
  t.equal(defaultModelsFolder({ HOME: '/h' }, 'darwin'), '/h/Library/Caches/pensieve/models');
  t.equal(defaultModelsFolder({ LOCALAPPDATA: 'C:\\L' }, 'win32'), 'C:\\L\\pensieve\\Cache\\models');
  t.equal(stateFolder({ HOME: '/h' }, 'linux'), '/h/.local/state/pensieve');
  t.equal(stateFolder({ HOME: '/h', XDG_STATE_HOME: '/s' }, 'linux'), '/s/pensieve');
  t.equal(stateFolder({ HOME: '/h' }, 'darwin'), '/h/Library/Application Support/pensieve');
  const { dir, load } = setup(t);
  const { config, raw, sources } = load({ env: { PENSIEVE_MODEL_FOLDER: '~/models', PENSIEVE_MODEL_CHECK_MEMORY: 'no' } });
  t.equal(config.model.folder, path.join(dir, 'models'));
  t.equal(raw.model.folder, '~/models', 'raw keeps the value as set');
  t.equal(config.model.checkMemory, false);
  t.equal(sources['model.check_memory'], 'env PENSIEVE_MODEL_CHECK_MEMORY');
});
