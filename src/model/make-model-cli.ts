/**
 * Writes a random-weight qwen2 GGUF model for tests and benchmarks.
 *
 *   node dist/src/model/make-model-cli.js --vocab PATH --out PATH [--preset tiny|small|qwen2.5-0.5b]
 *     [--layers N --embd N --heads N --kv-heads N --ffn N --ctx N] [--type q8_0|f16|f32] [--seed N]
 *
 * Shape flags override the preset's values (default preset: tiny).
 */
import { stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { MODEL_PRESETS, writeRandomQwen2Model, type ModelPreset, type ModelShape, type WeightType } from './random-model.js';

const USAGE =
  'usage: make-model-cli --vocab PATH --out PATH [--preset tiny|small|qwen2.5-0.5b] ' +
  '[--layers N --embd N --heads N --kv-heads N --ffn N --ctx N] [--type q8_0|f16|f32] [--seed N]';

const SHAPE_FLAGS: Record<string, Exclude<keyof ModelShape, 'experts'>> = {
  layers: 'layers', embd: 'embd', heads: 'heads', 'kv-heads': 'kvHeads', ffn: 'ffn', ctx: 'contextLength',
};

function oneOf<T extends string>(value: string, allowed: readonly T[], flag: string): T {
  if (!(allowed as readonly string[]).includes(value)) throw new Error(`--${flag} must be one of ${allowed.join(', ')}`);
  return value as T;
}

function integer(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${flag} must be a non-negative integer`);
  return n;
}

function parse(argv: string[]) {
  const shapeOptions = Object.fromEntries(Object.keys(SHAPE_FLAGS).map((flag) => [flag, { type: 'string' as const }]));
  const { values } = parseArgs({
    args: argv,
    options: {
      vocab: { type: 'string' },
      out: { type: 'string' },
      preset: { type: 'string', default: 'tiny' },
      type: { type: 'string', default: 'q8_0' },
      seed: { type: 'string', default: '0' },
      ...shapeOptions,
    },
    strict: true,
  });
  if (values.vocab === undefined || values.out === undefined) throw new Error('--vocab and --out are required');
  const preset = oneOf(values.preset, Object.keys(MODEL_PRESETS) as ModelPreset[], 'preset');
  const shape: ModelShape = { ...MODEL_PRESETS[preset] };
  for (const [flag, field] of Object.entries(SHAPE_FLAGS)) {
    const value = (values as Record<string, string | undefined>)[flag];
    if (value !== undefined) shape[field] = integer(value, flag);
  }
  return {
    vocabPath: values.vocab,
    outPath: values.out,
    shape,
    weightType: oneOf<WeightType>(values.type, ['q8_0', 'f16', 'f32'], 'type'),
    seed: integer(values.seed, 'seed'),
  };
}

async function main(): Promise<void> {
  let options: ReturnType<typeof parse>;
  try {
    options = parse(process.argv.slice(2));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  const started = performance.now();
  await writeRandomQwen2Model(options);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const megabytes = ((await stat(options.outPath)).size / 1e6).toFixed(1);
  console.log(`wrote ${options.outPath} (${megabytes} MB) in ${seconds} s`);
}

await main();
