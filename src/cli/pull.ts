// `pensieve pull`: download a model from Hugging Face into model.folder.
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.js';
import { DEFAULT_MODEL } from '../model/hub.js';
import { ExitCode, UsageError } from './errors.js';
import { hubRefArg, pullWithProgress } from './model-ref.js';
import { formatBytes } from './format.js';
import { help } from './shared.js';

const USAGE = `Usage: pensieve pull [REF] [options]

Downloads a GGUF model from Hugging Face into model.folder (default: <platform cache>/models), as
<owner>/<repo>/<file>. REF is owner/repo/file.gguf, owner/repo (its only .gguf, or its only
Q4_K_M one), or an alias of the catalogue: \`pensieve models --available\` lists them, with their
download size and expected context on this machine. Default: ${DEFAULT_MODEL}.
A repo that has a multimodal projector (an mmproj GGUF: a vision model's) gets it downloaded too,
beside the model, where \`pensieve start\` finds it.

An interrupted download is resumed (from <file>.partial) by the next pull; the file is checked
against the size and sha256 the hub reports before it takes its place. Progress goes to stderr,
the file's path to stdout. HF_ENDPOINT sets the hub's URL, HF_TOKEN a token for gated repos.

Options:
  --config FILE    TOML config file (for model.folder)
  -h, --help       show this help

Exit codes: 0 downloaded (or already there), 1 the download failed, 2 bad usage or config.
`;

export async function run(args: string[]): Promise<ExitCode> {
  const { values, positionals } = parseArgs({
    args,
    options: { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help) return help(USAGE);
  if (positionals.length > 1) throw new UsageError('pull takes one model reference');
  const ref = hubRefArg(positionals[0] ?? DEFAULT_MODEL);
  const { config } = loadConfig({ file: values.config });
  const result = await pullWithProgress(ref, config.model.folder);
  if (result.downloaded) {
    const check = result.sha256 ? `sha256 ${result.sha256}` : 'size only: the hub reported no sha256';
    process.stderr.write(`downloaded ${formatBytes(result.size)} (${check})\n`);
  } else process.stderr.write('already downloaded\n');
  if (result.projector) process.stderr.write(`with its projector (images): ${result.projector}\n`);
  process.stdout.write(`${result.path}\n`);
  return ExitCode.Ok;
}
