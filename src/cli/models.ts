// `pensieve models`: the models in model.folder, with their sizes.
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.js';
import { MODEL_ALIASES } from '../model/hub.js';
import { listLocalModels } from '../model/store.js';
import { ExitCode, UsageError } from './errors.js';
import { formatBytes } from './format.js';
import { help } from './shared.js';

const USAGE = `Usage: pensieve models [options]

Lists the downloaded models in model.folder: name (usable as --model and with rm), size, and alias.
Interrupted downloads are listed as partial; \`pensieve pull\` resumes them.

Options:
  --config FILE    TOML config file (for model.folder)
  --json           print a JSON array of {name, path, size, partial}
  -h, --help       show this help

Exit codes: 0 ok (also when there are none), 2 bad usage or config.
`;

export async function run(args: string[]): Promise<ExitCode> {
  const { values, positionals } = parseArgs({
    args,
    options: { config: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help) return help(USAGE);
  if (positionals.length > 0) throw new UsageError(`models takes no arguments, got ${positionals.join(' ')}`);
  const folder = loadConfig({ file: values.config }).config.model.folder;
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
