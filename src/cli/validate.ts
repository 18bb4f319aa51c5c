// `pensieve validate`: checks the config and the model file the way `start` would, without loading.
import { parseArgs } from 'node:util';
import { renderPlan, type MemoryPlan } from '../model/memory-plan.js';
import { inspectModel, inspectProjector, planFor, PreflightError } from '../model/preflight.js';
import { CliError, ExitCode } from './errors.js';
import { formatBytes } from './format.js';
import { localModelPath, projectorPath } from './model-ref.js';
import { help, loadWithFlags, SERVER_FLAGS_HELP, SERVER_OPTIONS } from './shared.js';

const USAGE = `Usage: pensieve validate [options]

Checks what \`pensieve start\` with the same options would use, without starting: the config (every
layer, every key), then the model file: GGUF magic and version, an architecture this llama.cpp
supports; the multimodal projector, when there is one (model.mmproj, or one pulled beside the
model); and the memory plan: the KV type and the pool of KV cells that fit beside the weights in
this machine's memory (RAM, or the GPU's free memory when the layers go to a GPU), the longest
context one session gets and how many 32k-token sessions fit at once. Downloads nothing.

Options:
  --model REF      as for start
${SERVER_FLAGS_HELP}

Exit codes: 0 all good, 1 the model is missing, damaged, unsupported or too big, 2 invalid config.
`;

export async function run(args: string[]): Promise<ExitCode> {
  const { values } = parseArgs({ args, options: { ...SERVER_OPTIONS, model: { type: 'string' } } });
  if (values.help) return help(USAGE);
  const { config } = loadWithFlags(values);
  const out = (text: string) => process.stdout.write(`${text}\n`);
  out('config: ok');
  const path = await localModelPath(config, false);
  const facts = await inspectModel(path).catch((err: unknown) => {
    throw toCliError(err);
  });
  out(`model: ${path}`);
  out(`  GGUF v${facts.version}, architecture ${facts.architecture}${facts.name ? ` (${facts.name})` : ''}, ${facts.layers} layers`);
  const { maxContext } = config.engine;
  if (facts.trainedContext !== undefined && facts.trainedContext < maxContext)
    out(`  note: trained for ${facts.trainedContext} tokens of context, engine.max_context is ${maxContext}`);
  const projector = await projectorPath(config, path);
  let projectorBytes = 0;
  if (projector) {
    const projectorFacts = await inspectProjector(projector).catch((err: unknown) => {
      throw toCliError(err);
    });
    projectorBytes = projectorFacts.fileBytes;
    out(`projector: ${projector}`);
    out(`  ${projectorFacts.projectorType} projector, ${formatBytes(projectorBytes)}: the model sees images`);
  }
  let plan: MemoryPlan;
  try {
    plan = planFor({ ...facts, fileBytes: facts.fileBytes + projectorBytes }, config);
  } catch (err) {
    throw toCliError(err);
  }
  out(`  ${renderPlan(plan)}`);
  if (!plan.fits) out('  does not fit in memory, but model.check_memory = false');
  out('ok');
  return ExitCode.Ok;
}

const toCliError = (err: unknown) => (err instanceof PreflightError ? new CliError(err.message) : err);
