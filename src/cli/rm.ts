// `pensieve rm`: delete a downloaded model (and its partial download) from model.folder.
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.js';
import { hubRefName } from '../model/hub.js';
import { removeLocalModel } from '../model/store.js';
import { CliError, ExitCode, UsageError } from './errors.js';
import { hubRefArg } from './model-ref.js';
import { help } from './shared.js';

const USAGE = `Usage: pensieve rm REF [options]

Deletes a downloaded model from model.folder, with its partial download if any. REF is a name
that \`pensieve models\` lists (owner/repo/file.gguf), an alias, or owner/repo (all of its files).

Options:
  --config FILE    TOML config file (for model.folder)
  -h, --help       show this help

Exit codes: 0 deleted, 1 no such local model, 2 bad usage or config.
`;

export async function run(args: string[]): Promise<ExitCode> {
  const { values, positionals } = parseArgs({
    args,
    options: { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help) return help(USAGE);
  if (positionals.length !== 1) throw new UsageError('rm takes one model reference (see `pensieve models`)');
  const ref = hubRefArg(positionals[0]!);
  const folder = loadConfig({ file: values.config }).config.model.folder;
  const removed = await removeLocalModel(folder, ref);
  if (removed.length === 0) throw new CliError(`no local model ${hubRefName(ref)} in ${folder}`);
  for (const path of removed) process.stdout.write(`deleted ${path}\n`);
  return ExitCode.Ok;
}
