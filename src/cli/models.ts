// `pensieve models`: the models in model.folder, with their sizes; `--available`: the catalogue's models.
import { parseArgs } from 'node:util';
import { loadConfig, type PensieveConfig } from '../config.js';
import {
  CATALOGUE,
  DEFAULT_ALIAS,
  DEFAULT_PLAN_ENGINE,
  expectedContext,
  LEGACY_ALIASES,
  MACHINE_CLASSES,
  machineOf,
  planEntry,
  type CatalogueEntry,
} from '../model/catalogue.js';
import { MODEL_ALIASES } from '../model/hub.js';
import type { Machine } from '../model/memory-plan.js';
import { detectMachine } from '../model/preflight.js';
import { listLocalModels } from '../model/store.js';
import { ExitCode, UsageError } from './errors.js';
import { formatBytes } from './format.js';
import { help } from './shared.js';

const USAGE = `Usage: pensieve models [options]

Lists the downloaded models in model.folder: name (usable as --model and with rm), size, and alias.
Interrupted downloads are listed as partial; \`pensieve pull\` resumes them.

With --available, lists the catalogue instead: the models chosen for Claude Code by machine size, by
alias (\`pensieve pull ALIAS\`, --model ALIAS), with their download size and expected context: the
longest session the memory plan gives (and its KV type) on this machine, with this config's [engine]
settings, and on each machine size with the default settings.

Options:
  --available      list the catalogue's models instead of the downloaded ones
  --config FILE    TOML config file (for model.folder, and the [engine] settings of --available)
  --json           print JSON: an array of {name, path, size, partial}; with --available, of the
                   catalogue's entries with their expected context here and per machine size
  -h, --help       show this help

Exit codes: 0 ok (also when there are none), 2 bad usage or config.
`;

export async function run(args: string[]): Promise<ExitCode> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      available: { type: 'boolean' },
      config: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
  });
  if (values.help) return help(USAGE);
  if (positionals.length > 0) throw new UsageError(`models takes no arguments, got ${positionals.join(' ')}`);
  const { config } = loadConfig({ file: values.config });
  if (values.available) return available(config, values.json === true);
  const folder = config.model.folder;
  const models = await listLocalModels(folder);
  if (values.json) {
    process.stdout.write(`${JSON.stringify(models, null, 2)}\n`);
    return ExitCode.Ok;
  }
  if (models.length === 0) {
    process.stdout.write(`no models in ${folder}\n`);
    return ExitCode.Ok;
  }
  const aliasOf = new Map(Object.entries(MODEL_ALIASES).map(([alias, name]) => [name, alias]));
  const width = Math.max(...models.map((m) => m.name.length));
  process.stdout.write(`${folder}:\n`);
  for (const m of models) {
    const notes = [m.partial && 'partial', aliasOf.get(m.name)].filter(Boolean).join(', ');
    process.stdout.write(`  ${m.name.padEnd(width)}  ${formatBytes(m.size).padStart(10)}${notes ? `  (${notes})` : ''}\n`);
  }
  return ExitCode.Ok;
}

const gb = (bytes: number) => `${(bytes / 1e9).toFixed(1)} GB`;

/** This machine in a few words: "CPU, 15.6 GiB" or the GPU and its free memory. */
function describe(machine: Machine): string {
  const gpus = machine.gpus;
  if (gpus.length === 0) return `CPU, ${formatBytes(machine.memoryBytes)}`;
  const free = gpus.reduce((sum, g) => sum + g.freeBytes, 0);
  return `${gpus.map((g) => g.name).join(', ')}, ${formatBytes(free)} free`;
}

function available(config: PensieveConfig, json: boolean): ExitCode {
  const machine = detectMachine();
  const engine = {
    slots: config.engine.slots,
    maxContext: config.engine.maxContext,
    poolTokens: config.engine.poolTokens,
    kvType: config.engine.kvType,
    ubatchSize: config.engine.ubatchSize,
    flashAttention: config.engine.flashAttention,
  };
  const here = (e: CatalogueEntry) => {
    try {
      return expectedContext(planEntry(e, machine, engine, config.model.gpuLayers));
    } catch (err) {
      return `refused: ${(err as Error).message}`; // a kv_type this model cannot use
    }
  };
  const perClass = (e: CatalogueEntry) => MACHINE_CLASSES.map((cls) => expectedContext(planEntry(e, machineOf(cls), DEFAULT_PLAN_ENGINE)));
  if (json) {
    const entries = CATALOGUE.map((e) => ({
      alias: e.alias,
      default: e.alias === DEFAULT_ALIAS,
      ref: `${e.repo}/${e.file}`,
      family: e.family,
      downloadBytes: e.downloadBytes,
      machines: e.machines,
      summary: e.summary,
      contextHere: here(e),
      contextByMachine: Object.fromEntries(MACHINE_CLASSES.map((cls, i) => [cls, perClass(e)[i]])),
    }));
    process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
    return ExitCode.Ok;
  }
  const name = (e: CatalogueEntry) => (e.alias === DEFAULT_ALIAS ? `${e.alias} (default)` : e.alias);
  const hereLabel = `CONTEXT HERE (${describe(machine)})`;
  const rows = CATALOGUE.map((e) => [name(e), gb(e.downloadBytes), e.machines.join(', '), here(e), e.summary]);
  const out: string[] = [];
  out.push(...table(['ALIAS', 'DOWNLOAD', 'FOR', hereLabel, 'MODEL'], rows), '');
  out.push('Expected context by machine (one session, default [engine] settings; GPU: all layers on it):');
  out.push(...table(['ALIAS', ...MACHINE_CLASSES], CATALOGUE.map((e) => [e.alias, ...perClass(e)])), '');
  for (const [alias, { note }] of Object.entries(LEGACY_ALIASES)) out.push(`Also: ${alias}, ${note}.`);
  out.push('`pensieve pull ALIAS` downloads one; `pensieve start --model ALIAS` serves it (downloading it if needed).');
  process.stdout.write(`${out.join('\n')}\n`);
  return ExitCode.Ok;
}

/** Left-aligned columns two spaces apart; the last column is not padded. */
function table(header: string[], rows: string[][]): string[] {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return all.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
}
