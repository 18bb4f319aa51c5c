// Configuration: built-in defaults (config/pensieve.toml) < user file < --config file < PENSIEVE_* env < flags.
// Each layer is validated on its own against one JSON schema, so an error names both the key and the layer.
// Every problem of every layer is collected and reported at once (one ConfigError, one line per problem).
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { parse as parseToml, TomlError } from 'smol-toml';
import { projectRoot } from './paths.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const FLASH_ATTENTION = ['off', 'on', 'auto'] as const;
export type FlashAttention = (typeof FLASH_ATTENTION)[number];
/** KV cache element types, most precise first; "auto" lets the memory plan choose (src/model/memory-plan.ts). */
export const KV_TYPES = ['f16', 'q8_0', 'q4_0'] as const;
export type KvType = (typeof KV_TYPES)[number];
/** What a model without a projector does with an image: put a text note in its place, or refuse the request. */
export const IMAGE_MODES = ['note', 'reject'] as const;
export type ImageMode = (typeof IMAGE_MODES)[number];

/** The TOML shape (snake_case), as validated by {@link configSchema}. */
export interface RawConfig {
  server: {
    host: string;
    port: number;
    api_keys: string[];
    require_key_on_loopback: boolean;
    body_limit_mb: number;
    allowed_hosts: string[];
    cors_origins: string[];
    rate_limit_per_minute: number;
    shutdown_grace_seconds: number;
  };
  model: { path: string; mmproj: string; folder: string; check_memory: boolean; gpu_layers: number; aliases: Record<string, string> };
  api: { images: ImageMode; fetch_image_urls: boolean; max_image_mb: number };
  engine: {
    slots: number;
    max_context: number;
    pool_tokens: number;
    kv_type: KvType | 'auto';
    step_token_budget: number;
    batch_size: number;
    ubatch_size: number;
    threads: number;
    queue_length: number;
    ring_records: number;
    stream_interval_ms: number;
    flash_attention: FlashAttention;
    huge_pages: boolean;
  };
  cache: { folder: string; max_mb: number };
  log: { level: LogLevel; prompts: boolean };
}

export interface PensieveConfig {
  server: {
    host: string;
    port: number;
    apiKeys: string[];
    requireKeyOnLoopback: boolean;
    bodyLimitMb: number;
    /** Host header names accepted besides loopback names and IP addresses (DNS rebinding guard). */
    allowedHosts: string[];
    /** Origins answered with CORS headers; empty = CORS off. */
    corsOrigins: string[];
    /** Requests per minute per API key (or client address); 0 = no limit. */
    rateLimitPerMinute: number;
    shutdownGraceSeconds: number;
  };
  /**
   * `path` is '' when no model was configured, else a file path, a hub reference or an alias; a leading
   * `~` is expanded. `folder` (downloaded models) is always absolute: '' becomes `<platform cache>/models`.
   */
  model: {
    path: string;
    /** The multimodal projector (mmproj GGUF) that lets the model see images; '' = none. */
    mmproj: string;
    folder: string;
    checkMemory: boolean;
    gpuLayers: number;
    aliases: Record<string, string>;
  };
  api: { images: ImageMode; fetchImageUrls: boolean; maxImageMb: number };
  engine: {
    slots: number;
    /** Longest context (prompt + output) of one sequence; 0 = the model's trained context, within the pool. */
    maxContext: number;
    /** KV cells shared by all sequences; 0 = sized to this machine's memory. */
    poolTokens: number;
    kvType: KvType | 'auto';
    stepTokenBudget: number;
    batchSize: number;
    ubatchSize: number;
    threads: number;
    queueLength: number;
    ringRecords: number;
    streamIntervalMs: number;
    flashAttention: FlashAttention;
    /** Model weights, KV cache and compute buffers in memory of transparent huge pages (Linux). */
    hugePages: boolean;
  };
  /** `folder` is always an absolute path: '' in the TOML becomes the platform cache folder. */
  cache: { folder: string; maxMb: number };
  log: { level: LogLevel; prompts: boolean };
}

export type DeepPartial<T> = {
  [K in keyof T]?: T[K] extends readonly unknown[] ? T[K] : T[K] extends object ? DeepPartial<T[K]> : T[K];
};

export interface LoadConfigOptions {
  /** Explicit config file (--config); when given, the user file is not read. */
  file?: string;
  /** Environment for PENSIEVE_* variables and the platform folders; defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  /** Values from command-line flags, in the TOML shape; undefined values are ignored. */
  overrides?: DeepPartial<RawConfig> | Record<string, unknown>;
  /** Defaults to process.platform; picks the user config and cache folders. */
  platform?: NodeJS.Platform;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  /** One line per problem; `message` is these lines joined. */
  readonly problems: string[];
  constructor(problems: string | string[]) {
    const list = typeof problems === 'string' ? [problems] : problems;
    super(list.join('\n'));
    this.problems = list;
  }
}

type Prop = { type: 'string' | 'integer' | 'boolean' | 'array' | 'object'; [keyword: string]: unknown };
const int = (minimum: number, maximum: number): Prop => ({ type: 'integer', minimum, maximum });
const str = (minLength = 0): Prop => ({ type: 'string', minLength });

const SECTIONS: Record<keyof RawConfig, Record<string, Prop>> = {
  server: {
    host: str(1),
    port: int(0, 65535),
    api_keys: { type: 'array', items: str(1) },
    require_key_on_loopback: { type: 'boolean' },
    body_limit_mb: int(1, 1024),
    allowed_hosts: { type: 'array', items: str(1) },
    cors_origins: { type: 'array', items: str(1) },
    rate_limit_per_minute: int(0, 1000000),
    shutdown_grace_seconds: int(0, 3600),
  },
  model: {
    path: str(),
    mmproj: str(),
    folder: str(),
    check_memory: { type: 'boolean' },
    gpu_layers: int(-1, 4096),
    aliases: { type: 'object', propertyNames: { pattern: '^([^*]+\\*?|\\*)$' }, additionalProperties: str(1) },
  },
  api: {
    images: { type: 'string', enum: [...IMAGE_MODES] },
    fetch_image_urls: { type: 'boolean' },
    max_image_mb: int(1, 1024),
  },
  engine: {
    slots: int(1, 256),
    max_context: int(0, 16777216),
    pool_tokens: int(0, 16777216),
    kv_type: { type: 'string', enum: [...KV_TYPES, 'auto'] },
    step_token_budget: int(1, 65536),
    batch_size: int(1, 65536),
    ubatch_size: int(1, 65536),
    threads: int(0, 1024),
    queue_length: int(0, 65536),
    ring_records: int(16, 65536),
    stream_interval_ms: int(0, 1000),
    flash_attention: { type: 'string', enum: [...FLASH_ATTENTION] },
    huge_pages: { type: 'boolean' },
  },
  cache: { folder: str(), max_mb: int(0, 1048576) },
  log: { level: { type: 'string', enum: [...LOG_LEVELS] }, prompts: { type: 'boolean' } },
};

const table = (properties: Record<string, object>, complete: boolean) => ({
  type: 'object',
  additionalProperties: false,
  properties,
  ...(complete && { required: Object.keys(properties) }),
});
const schemaOf = (complete: boolean) =>
  table(Object.fromEntries(Object.entries(SECTIONS).map(([name, props]) => [name, table(props, complete)])), complete);

/** JSON schema (draft-07) of one layer of the TOML shape: every key optional. */
export const configSchema = schemaOf(false);

let validators: { layer: ValidateFunction; complete: ValidateFunction } | undefined;
function validatorsOf() {
  if (validators) return validators;
  const ajv = new Ajv({ allErrors: true });
  return (validators = { layer: ajv.compile(configSchema), complete: ajv.compile(schemaOf(true)) });
}

type Table = Record<string, unknown>;
const isTable = (v: unknown): v is Table => typeof v === 'object' && v !== null && !Array.isArray(v);

interface Layer {
  data: Table;
  /** Recorded in `sources` for each key the layer sets. */
  source: string;
  /** Starts error messages: `config /path/x.toml`, `env PENSIEVE_ENGINE_SLOTS`, `flag`. */
  where: string;
  /** For env layers: the one key the variable sets, left out of messages about it. */
  ownKey?: string;
  /** Keys (`section` or `section.key`) with a problem: left out of the merge, so cross-key checks see only valid values. */
  faulty?: Set<string>;
}

function problem(layer: Layer, key: string, text: string): string {
  return `${layer.where}: ${key === layer.ownKey ? '' : `${key} `}${text}`;
}

const pathOf = (e: ErrorObject) => e.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));

/** The key an ajv error is about: errors about one property (unknown, missing, bad name) are reported on its table. */
function subjectOf(e: ErrorObject): string[] {
  const name = e.params.additionalProperty ?? e.params.missingProperty ?? e.propertyName ?? e.params.propertyName;
  return name === undefined ? pathOf(e) : [...pathOf(e), String(name)];
}

function describe(layer: Layer, e: ErrorObject): string {
  const key = pathOf(e).join('.');
  const subject = subjectOf(e).join('.');
  switch (e.keyword) {
    case 'additionalProperties':
      return `${layer.where}: unknown key ${subject}`;
    case 'required':
      return `${layer.where}: missing key ${subject}`;
    case 'type': {
      const type = e.params.type === 'object' ? 'table' : String(e.params.type);
      return problem(layer, key, `must be ${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`);
    }
    case 'enum':
      return problem(layer, key, `must be one of ${(e.params.allowedValues as string[]).join(', ')}`);
    case 'minLength':
      return problem(layer, key, 'must not be empty');
    default:
      if (e.propertyName !== undefined)
        return problem(layer, key, `pattern ${JSON.stringify(e.propertyName)} is invalid: '*' may only come last`);
      return problem(layer, key, e.message ?? e.keyword);
  }
}

/**
 * Adds the layer's schema problems to `problems`: one per key, since ajv may report several errors for one
 * (`type` then `minimum`; a bad alias pattern as `pattern` then `propertyNames`), and the first says it.
 */
function validate(layer: Layer, problems: string[], complete = false): Layer {
  const check = validatorsOf()[complete ? 'complete' : 'layer'];
  if (check(layer.data)) return layer;
  const seen = new Set<string>();
  layer.faulty = new Set();
  for (const e of check.errors!) {
    const subject = subjectOf(e);
    const id = JSON.stringify(subject);
    if (seen.has(id)) continue;
    seen.add(id);
    problems.push(describe(layer, e));
    layer.faulty.add(subject.slice(0, 2).join('.'));
  }
  return layer;
}

/** The file's layer, or undefined (and a problem) when it cannot be read or parsed. */
function readLayer(file: string, source: string, problems: string[]): Layer | undefined {
  const where = `config ${file}`;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    problems.push(`${where}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    return undefined;
  }
  try {
    return { data: parseToml(text), source, where };
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    const reason = err.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
    problems.push(`${where}: TOML syntax error at line ${err.line}, column ${err.column}: ${reason}`);
    return undefined;
  }
}

/** config/pensieve.toml of the package: found by walking up from this module (src/ or dist/src/). */
export function defaultConfigFile(): string {
  return path.join(projectRoot, 'config', 'pensieve.toml');
}

const home = (env: NodeJS.ProcessEnv) => env.HOME || env.USERPROFILE || os.homedir();

/** The per-user config file, which is read when it exists and no explicit file is given. */
export function userConfigFile(env: NodeJS.ProcessEnv = process.env, platform = process.platform): string {
  if (platform === 'win32')
    return path.win32.join(env.APPDATA || path.win32.join(home(env), 'AppData', 'Roaming'), 'pensieve', 'pensieve.toml');
  if (platform === 'darwin') return path.join(home(env), 'Library', 'Application Support', 'pensieve', 'pensieve.toml');
  return path.join(env.XDG_CONFIG_HOME || path.join(home(env), '.config'), 'pensieve', 'pensieve.toml');
}

/** Where the prompt cache goes when cache.folder is ''. */
export function defaultCacheFolder(env: NodeJS.ProcessEnv = process.env, platform = process.platform): string {
  if (platform === 'win32')
    return path.win32.join(env.LOCALAPPDATA || path.win32.join(home(env), 'AppData', 'Local'), 'pensieve', 'Cache');
  if (platform === 'darwin') return path.join(home(env), 'Library', 'Caches', 'pensieve');
  return path.join(env.XDG_CACHE_HOME || path.join(home(env), '.cache'), 'pensieve');
}

/** Where downloaded models go when model.folder is '': beside the prompt cache, never inside it. */
export function defaultModelsFolder(env: NodeJS.ProcessEnv = process.env, platform = process.platform): string {
  return (platform === 'win32' ? path.win32 : path).join(defaultCacheFolder(env, platform), 'models');
}

/** Where `start --daemon` keeps its pid and log files. */
export function stateFolder(env: NodeJS.ProcessEnv = process.env, platform = process.platform): string {
  if (platform === 'win32')
    return path.win32.join(env.LOCALAPPDATA || path.win32.join(home(env), 'AppData', 'Local'), 'pensieve', 'State');
  if (platform === 'darwin') return path.join(home(env), 'Library', 'Application Support', 'pensieve');
  return path.join(env.XDG_STATE_HOME || path.join(home(env), '.local', 'state'), 'pensieve');
}

const BOOLEANS: Record<string, boolean> = { true: true, false: false, '1': true, '0': false, yes: true, no: false, on: true, off: false };

type Coerced = { value: unknown } | { problem: string };

function coerce(type: Prop['type'], text: string): Coerced {
  const list = () => text.split(',').map((s) => s.trim()).filter(Boolean);
  switch (type) {
    case 'integer':
      return /^[+-]?\d+$/.test(text.trim()) ? { value: Number(text) } : { problem: 'must be an integer' };
    case 'boolean': {
      const value = BOOLEANS[text.trim().toLowerCase()];
      return value === undefined ? { problem: 'must be true or false' } : { value };
    }
    case 'array':
      return { value: list() };
    case 'object': {
      const pairs = list();
      if (!pairs.every((pair) => pair.includes('='))) return { problem: 'must be pattern=target pairs separated by commas' };
      const split = (pair: string) => {
        const eq = pair.indexOf('=');
        return [pair.slice(0, eq).trim(), pair.slice(eq + 1).trim()];
      };
      return { value: Object.fromEntries(pairs.map(split)) };
    }
    case 'string':
      return { value: text };
  }
}

/**
 * One layer per PENSIEVE_<SECTION>_<KEY> variable; a variable that does not coerce to its key's type is a
 * problem and sets nothing; so is a variable with an unknown key under a known section.
 */
function envLayers(env: NodeJS.ProcessEnv, problems: string[]): Layer[] {
  const layers: Layer[] = [];
  const known = new Set<string>();
  for (const [section, props] of Object.entries(SECTIONS))
    for (const [key, prop] of Object.entries(props)) {
      const name = `PENSIEVE_${section}_${key}`.toUpperCase();
      known.add(name);
      const text = env[name];
      if (!text) continue;
      const layer: Layer = { data: {}, source: `env ${name}`, where: `env ${name}`, ownKey: `${section}.${key}` };
      const coerced = coerce(prop.type, text);
      if ('problem' in coerced) problems.push(problem(layer, layer.ownKey!, coerced.problem));
      else {
        layer.data[section] = { [key]: coerced.value };
        layers.push(validate(layer, problems));
      }
    }
  const sectionPrefix = new RegExp(`^PENSIEVE_(${Object.keys(SECTIONS).join('|').toUpperCase()})_`);
  for (const name of Object.keys(env))
    if (sectionPrefix.test(name) && !known.has(name))
      problems.push(`env ${name}: unknown key (not a PENSIEVE_<SECTION>_<KEY> setting)`);
  return layers;
}

/**
 * Merges `from` into `into`, leaving out the keys in `skip`; records the source of each leaf (arrays are
 * leaves, tables merge).
 */
function merge(into: Table, from: Table, source: string, sources: Record<string, string>, skip?: Set<string>, prefix = ''): void {
  for (const [k, v] of Object.entries(from)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v === undefined || skip?.has(key)) continue;
    if (isTable(v)) merge((into[k] = isTable(into[k]) ? into[k] : {}) as Table, v, source, sources, skip, key);
    else {
      into[k] = Array.isArray(v) ? [...(v as unknown[])] : v;
      sources[key] = source;
    }
  }
}

const expandHome = (p: string, env: NodeJS.ProcessEnv) => (/^~(?=$|[\\/])/.test(p) ? home(env) + p.slice(1) : p);

export interface LoadedConfig {
  config: PensieveConfig;
  /** The merged TOML shape, as the layers set it (paths not yet resolved). */
  raw: RawConfig;
  /**
   * Where each leaf key (`engine.slots`, `model.aliases.claude-*`) came from: `default`,
   * `user file PATH`, `--config PATH`, `env NAME` or `flag`.
   */
  sources: Record<string, string>;
}

/** Reads, validates and merges every layer; a layer's problems do not stop the others from being read. */
function mergeLayers(opts: LoadConfigOptions, env: NodeJS.ProcessEnv, platform: NodeJS.Platform) {
  const problems: string[] = [];
  const layers: Layer[] = [];
  const defaults = readLayer(defaultConfigFile(), 'default', problems);
  if (defaults) layers.push(validate(defaults, problems, true));
  const user = userConfigFile(env, platform);
  const file = opts.file === undefined ? (existsSync(user) ? user : undefined) : path.resolve(opts.file);
  const source = opts.file === undefined ? `user file ${file}` : `--config ${file}`;
  const fileLayer = file ? readLayer(file, source, problems) : undefined;
  if (fileLayer) layers.push(validate(fileLayer, problems));
  layers.push(...envLayers(env, problems));
  if (opts.overrides) layers.push(validate({ data: opts.overrides as Table, source: 'flag', where: 'flag' }, problems));

  const merged: Table = {};
  const sources: Record<string, string> = {};
  for (const layer of layers) merge(merged, layer.data, layer.source, sources, layer.faulty);
  return { raw: merged as unknown as RawConfig, sources, problems };
}

/** Checks between keys, on the merged values (unset only where a layer was broken: `undefined > n` is false). */
function crossKeyProblems(raw: RawConfig, sources: Record<string, string>): string[] {
  const engine: Partial<RawConfig['engine']> = raw.engine ?? {};
  const atMost = (small: keyof RawConfig['engine'], big: keyof RawConfig['engine']) => {
    const [a, b] = [`engine.${small}`, `engine.${big}`];
    return engine[small]! > engine[big]!
      ? [`config: ${a} (${engine[small]}, from ${sources[a]}) must be <= ${b} (${engine[big]}, from ${sources[b]})`]
      : [];
  };
  return [...atMost('ubatch_size', 'batch_size'), ...atMost('step_token_budget', 'batch_size')];
}

export function loadConfig(opts: LoadConfigOptions = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  const platform = opts.platform ?? process.platform;
  const { raw, sources, problems } = mergeLayers(opts, env, platform);
  problems.push(...crossKeyProblems(raw, sources));
  if (problems.length) throw new ConfigError(problems);

  const { server: s, model: m, api: a, engine: e, cache: c } = raw;
  const config: PensieveConfig = {
    server: {
      host: s.host,
      port: s.port,
      apiKeys: s.api_keys,
      requireKeyOnLoopback: s.require_key_on_loopback,
      bodyLimitMb: s.body_limit_mb,
      allowedHosts: s.allowed_hosts,
      corsOrigins: s.cors_origins,
      rateLimitPerMinute: s.rate_limit_per_minute,
      shutdownGraceSeconds: s.shutdown_grace_seconds,
    },
    model: {
      path: expandHome(m.path, env),
      mmproj: m.mmproj ? path.resolve(expandHome(m.mmproj, env)) : '',
      folder: m.folder ? path.resolve(expandHome(m.folder, env)) : defaultModelsFolder(env, platform),
      checkMemory: m.check_memory,
      gpuLayers: m.gpu_layers,
      aliases: m.aliases,
    },
    api: { images: a.images, fetchImageUrls: a.fetch_image_urls, maxImageMb: a.max_image_mb },
    engine: {
      slots: e.slots,
      maxContext: e.max_context,
      poolTokens: e.pool_tokens,
      kvType: e.kv_type,
      stepTokenBudget: e.step_token_budget,
      batchSize: e.batch_size,
      ubatchSize: e.ubatch_size,
      threads: e.threads,
      queueLength: e.queue_length,
      ringRecords: e.ring_records,
      streamIntervalMs: e.stream_interval_ms,
      flashAttention: e.flash_attention,
      hugePages: e.huge_pages,
    },
    cache: { folder: c.folder ? path.resolve(expandHome(c.folder, env)) : defaultCacheFolder(env, platform), maxMb: c.max_mb },
    log: { level: raw.log.level, prompts: raw.log.prompts },
  };
  return { config, raw, sources };
}
