// `pensieve validate`: checks the config and the model file the way `start` would, without loading.
import { parseArgs } from 'node:util';
import { estimateMemory, gib, inspectModel, memoryAdvice, PreflightError } from '../model/preflight.js';
import { CliError, ExitCode } from './errors.js';
import { localModelPath } from './model-ref.js';
import { help, loadWithFlags, SERVER_FLAGS_HELP, SERVER_OPTIONS } from './shared.js';

const USAGE = `Usage: pensieve validate [options]

Checks what \`pensieve start\` with the same options would use, without starting: the config (every
layer, every key), then the model file: GGUF magic and version, an architecture this llama.cpp
supports, and whether its weights plus the KV cache for engine.slots x engine.context_per_slot fit
in this machine's memory. Downloads nothing.

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
    throw err instanceof PreflightError ? new CliError(err.message) : err;
  });
  const run = config.engine;
  const memory = estimateMemory(facts, run);
  out(`model: ${path}`);
  out(`  GGUF v${facts.version}, architecture ${facts.architecture}${facts.name ? ` (${facts.name})` : ''}, ${facts.layers} layers`);
  if (facts.trainedContext !== undefined && facts.trainedContext < run.contextPerSlot)
    out(`  note: trained for ${facts.trainedContext} tokens of context, engine.context_per_slot is ${run.contextPerSlot}`);
  out(
    `  memory: weights ${gib(memory.weights)} + KV cache ${gib(memory.kvCache)} (${run.slots} x ${run.contextPerSlot} tokens) ` +
      `+ margin ${gib(memory.margin)} = ${gib(memory.total)} of ${gib(memory.available)}`,
  );
  if (!memory.fits) {
    if (config.model.checkMemory) throw new CliError(memoryAdvice(facts, run, memory));
    out('  does not fit in memory, but model.check_memory = false');
  }
  out('ok');
  return ExitCode.Ok;
}
