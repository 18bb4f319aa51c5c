// `pensieve config`: the effective configuration as TOML, each key followed by where its value came from.
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { stringify } from 'smol-toml';
import { defaultConfigFile, userConfigFile, type PensieveConfig } from '../config.js';
import { DEFAULT_API_KEY } from '../server/exposure.js';
import { ExitCode } from './errors.js';
import { help, loadWithFlags, SERVER_FLAGS_HELP, SERVER_OPTIONS } from './shared.js';

const USAGE = `Usage: pensieve config [options]

Prints the effective configuration as TOML; a comment after each key says where its value came
from: default (config/pensieve.toml), user file PATH, --config PATH, env PENSIEVE_<SECTION>_<KEY>,
or flag. The flags are start's, so that this shows what \`pensieve start\` with them would use.

Options:
  --model REF      as for start
  --json           print {"key": {"value": ..., "source": ...}} instead
  --show-secrets   print server.api_keys in full (by default only the last 4 characters
                   of a key other than the built-in default are shown)
${SERVER_FLAGS_HELP}

Exit codes: 0 ok, 2 invalid config (the message names the key and where it came from).
`;

type Table = Record<string, unknown>;
const isTable = (v: unknown): v is Table => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Leaf keys in order, as [section path, key, value]; tables nest (model.aliases). */
function leaves(table: Table, prefix: string[] = []): [string[], string, unknown][] {
  const own = Object.entries(table).filter(([, v]) => !isTable(v));
  const nested = Object.entries(table).filter(([, v]) => isTable(v));
  return [
    ...own.map(([k, v]): [string[], string, unknown] => [prefix, k, v]),
    ...nested.flatMap(([k, v]) => leaves(v as Table, [...prefix, k])),
  ];
}

/** What '' and other shorthands turn into, where the raw value does not say. */
function resolved(config: PensieveConfig, key: string): string | undefined {
  if (key === 'model.folder') return config.model.folder;
  if (key === 'cache.folder') return config.cache.folder;
  return undefined;
}

/** An API key as printed: the public default in full, a secret one by its last 4 characters only. */
function maskedKey(key: string): string {
  if (key === DEFAULT_API_KEY) return key;
  return key.length > 8 ? `****${key.slice(-4)}` : '****';
}

export async function run(args: string[]): Promise<ExitCode> {
  const { values } = parseArgs({ args, options: {
    ...SERVER_OPTIONS, model: { type: 'string' }, json: { type: 'boolean' }, 'show-secrets': { type: 'boolean' },
  } });
  if (values.help) return help(USAGE);
  const { config, raw, sources } = loadWithFlags(values);
  const entries = leaves(raw as unknown as Table).map(([section, key, value]) => {
    const dotted = [...section, key].join('.');
    const secret = dotted === 'server.api_keys' && !values['show-secrets'];
    return { section: section.join('.'), key, dotted, value: secret ? (value as string[]).map(maskedKey) : value, source: sources[dotted] };
  });

  if (values.json) {
    const json = Object.fromEntries(entries.map((e) => [e.dotted, { value: e.value, source: e.source }]));
    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
    return ExitCode.Ok;
  }
  const user = userConfigFile();
  const out = [`# default: ${defaultConfigFile()}`, `# user file: ${user}${existsSync(user) ? '' : ' (none)'}`];
  const width = Math.max(...entries.map((e) => stringify({ [e.key]: e.value }).trim().length));
  let section: string | undefined;
  for (const e of entries) {
    if (e.section !== section) out.push('', `[${(section = e.section)}]`);
    const line = stringify({ [e.key]: e.value }).trim();
    const target = resolved(config, e.dotted);
    const note = target !== undefined && target !== e.value ? ` (${target})` : '';
    out.push(`${line.padEnd(width)}  # ${e.source}${note}`);
  }
  process.stdout.write(`${out.join('\n')}\n`);
  return ExitCode.Ok;
}
