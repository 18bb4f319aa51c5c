// Model preflight: GGUF checks on good, garbage and unsupported files, the KV shape read from the metadata
// (sliding-window layers included), and the plan's refusal.
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { writeGguf, type GgufMetadata, type GgufValue } from '../src/model/gguf.js';
import { LLAMA_ARCH_SOURCE, llamaArchitectures } from '../src/model/llama-architectures.js';
import { kvBytesPerToken, type KvShape, type Machine } from '../src/model/memory-plan.js';
import { inspectModel, kvShape, preflight, type PreflightConfig } from '../src/model/preflight.js';
import { MODEL_PRESETS } from '../src/model/random-model.js';
import { tinyModelPath } from './helpers/models.js';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

const u32 = (value: number): GgufValue => ({ type: 'uint32', value });
const str = (value: string): GgufValue => ({ type: 'string', value });

/** A tensor-less GGUF with the given metadata. */
async function ggufWith(dir: string, name: string, entries: [string, GgufValue][]): Promise<string> {
  const file = path.join(dir, name);
  await writeGguf(file, { metadata: new Map(entries), tensors: [] });
  return file;
}

const CONFIG: PreflightConfig = {
  model: { gpuLayers: -1, checkMemory: true },
  engine: { slots: 2, maxContext: 0, poolTokens: 0, kvType: 'auto', ubatchSize: 512, flashAttention: 'auto' },
};
const cpu = (bytes: number): Machine => ({ memoryBytes: bytes, gpus: [] });

t.test('the tiny model passes and its plan follows its shape', async (t) => {
  const model = await tinyModelPath();
  const facts = await inspectModel(model);
  const shape = MODEL_PRESETS.tiny;
  t.equal(facts.architecture, 'qwen2');
  t.equal(facts.version, 3);
  t.equal(facts.layers, shape.layers);
  t.equal(facts.trainedContext, shape.contextLength);
  const headDim = shape.embd / shape.heads;
  t.equal(kvBytesPerToken(facts.kv, 'f16'), shape.layers * shape.kvHeads * 2 * headDim * 2, 'layers x kv heads x (k + v) x f16');
  const { plan } = await preflight(model, CONFIG, cpu(16 * GIB));
  t.equal(plan.kvType, 'f16');
  t.equal(plan.poolTokens, 2 * shape.contextLength, 'slots x the trained context');
  t.equal(plan.maxContext, shape.contextLength);
  t.equal(plan.weightsBytes, facts.fileBytes);
  t.ok(plan.fits);
});

t.test('a model that does not fit is refused unless the check is off', async (t) => {
  const model = await tinyModelPath();
  // 100 MiB of RAM: not even the 2 GiB kept for the system.
  await t.rejects(preflight(model, CONFIG, cpu(100 * MIB)), {
    name: 'PreflightError',
    message: /needs about .* GiB of memory for a pool of 8192 tokens of f16 KV cache, but this machine has 0\.0 GiB \(0\.1 GiB of RAM less 2\.0 GiB kept[^]*weights alone do not fit[^]*model\.check_memory = false/,
  });
  const unchecked = await preflight(model, { ...CONFIG, model: { gpuLayers: -1, checkMemory: false } }, cpu(100 * MIB));
  t.equal(unchecked.plan.fits, false);
  t.equal(unchecked.plan.poolTokens, 8192, 'the smallest pool, unchecked');
  // Its heads of 16 are not whole q8_0 blocks: refused whatever the memory (and check_memory).
  await t.rejects(preflight(model, { model: { gpuLayers: -1, checkMemory: false }, engine: { ...CONFIG.engine, kvType: 'q8_0' } }, cpu(16 * GIB)), {
    name: 'PreflightError',
    message: /engine\.kv_type = "q8_0" needs key and value head sizes that are multiples of 32/,
  });
});

t.test('KV shape: GQA, explicit key/value lengths, per-layer head counts', async (t) => {
  const meta = (entries: [string, GgufValue][]): GgufMetadata => new Map(entries);
  const f16 = (m: GgufMetadata, layers: number) => kvBytesPerToken(kvShape(m, 'a', layers), 'f16');
  t.equal(f16(meta([['a.embedding_length', u32(4096)], ['a.attention.head_count', u32(32)], ['a.attention.head_count_kv', u32(8)]]), 2), 2 * 8 * 256 * 2);
  t.equal(f16(meta([['a.attention.head_count', u32(8)], ['a.attention.key_length', u32(192)], ['a.attention.value_length', u32(128)]]), 1), 8 * 320 * 2);
  const perLayer: GgufValue = { type: 'array', itemType: 'uint32', value: [4, 0, 2] };
  const shape = kvShape(meta([['a.embedding_length', u32(512)], ['a.attention.head_count', u32(8)], ['a.attention.head_count_kv', perLayer]]), 'a', 3);
  t.same(shape.layers.map((l) => l.kvHeads), [4, 0, 2]);
  t.equal(kvBytesPerToken(shape, 'f16'), (4 + 0 + 2) * 128 * 2);
  t.equal(kvBytesPerToken(shape, 'q8_0'), (4 + 0 + 2) * 2 * 2 * 34, 'q8_0: heads of 64 are 2 blocks of 34 bytes');
  t.equal(f16(meta([]), 4), 0, 'no attention (recurrent): no KV');
});

t.test("sliding-window layers as llama.cpp's loaders mark them", async (t) => {
  const common = (arch: string): [string, GgufValue][] => [
    [`${arch}.embedding_length`, u32(2880)],
    [`${arch}.attention.head_count`, u32(64)],
    [`${arch}.attention.head_count_kv`, u32(8)],
    [`${arch}.attention.key_length`, u32(64)],
    [`${arch}.attention.value_length`, u32(64)],
  ];
  const swaOf = (arch: string, layers: number, extra: [string, GgufValue][] = []) => kvShape(new Map([...common(arch), ...extra]), arch, layers);
  const flags = (s: KvShape) => s.layers.map((l) => (l.swa ? 'S' : 'F')).join('');

  const gptOss = swaOf('gpt-oss', 6, [['gpt-oss.attention.sliding_window', u32(128)]]);
  t.equal(flags(gptOss), 'SFSFSF', 'gpt-oss: period 2, the first layer sliding');
  t.equal(gptOss.slidingWindow, 128);
  t.equal(kvBytesPerToken(gptOss, 'f16'), 3 * 8 * 128 * 2, 'only the full layers cost per pool cell');

  t.equal(flags(swaOf('gemma3', 12, [['gemma3.attention.sliding_window', u32(1024)]])), 'SSSSSFSSSSSF', 'gemma3: 5 sliding, 1 full');
  t.equal(flags(swaOf('gemma3', 6)), 'FFFFFF', 'gemma3 without a window: no SWA');
  t.equal(flags(swaOf('cohere2moe', 8, [['cohere2moe.attention.sliding_window', u32(4096)]])), 'FSSSFSSS', 'dense first');
  const llama4 = swaOf('llama4', 4);
  t.equal(flags(llama4), 'SSSF', 'llama4: chunked unless the file says 0');
  t.equal(llama4.slidingWindow, 8192);
  t.equal(flags(swaOf('llama4', 4, [['llama4.attention.sliding_window', u32(0)]])), 'FFFF');
  t.equal(flags(swaOf('phi3', 4, [['phi3.attention.sliding_window', u32(262144)]])), 'FFFF', 'phi3: llama.cpp ignores its window');
  t.equal(flags(swaOf('llama', 4, [['llama.attention.sliding_window', u32(4096)]])), 'FFFF', 'an architecture without SWA');

  const period: [string, GgufValue][] = [['gpt-oss.attention.sliding_window', u32(128)], ['gpt-oss.attention.sliding_window_pattern', u32(3)]];
  t.equal(flags(swaOf('gpt-oss', 6, period)), 'SSFSSF', 'a period in the file overrides the default');
  const array: GgufValue = { type: 'array', itemType: 'bool', value: [false, true, true, false] };
  const gemma4 = swaOf('gemma4', 4, [
    ['gemma4.attention.sliding_window', u32(512)],
    ['gemma4.attention.sliding_window_pattern', array],
    ['gemma4.attention.key_length_swa', u32(256)],
    ['gemma4.attention.value_length_swa', u32(256)],
  ]);
  t.equal(flags(gemma4), 'FSSF', 'per-layer flags from the file');
  t.same(gemma4.layers.map((l) => l.keyLength), [64, 256, 256, 64], 'sliding layers have their own head size');
  t.equal(flags(swaOf('gemma4', 4, [['gemma4.attention.sliding_window', u32(512)]])), 'FFFF', 'no array: counted as full');
});

t.test('garbage, wrong versions, truncated files and unknown architectures are refused', async (t) => {
  const dir = t.testdir({ 'garbage.gguf': 'this is an HTML error page, not a model', 'empty.gguf': '' });
  await t.rejects(inspectModel(path.join(dir, 'garbage.gguf')), { name: 'PreflightError', message: /is not a GGUF file/ });
  await t.rejects(inspectModel(path.join(dir, 'empty.gguf')), { message: /is not a GGUF file/ });
  await t.rejects(inspectModel(path.join(dir, 'missing.gguf')), { message: /cannot read the model file \(ENOENT\)/ });

  const v1 = Buffer.alloc(24);
  v1.write('GGUF', 0, 'latin1');
  v1.writeUInt32LE(1, 4);
  writeFileSync(path.join(dir, 'v1.gguf'), v1);
  await t.rejects(inspectModel(path.join(dir, 'v1.gguf')), { message: /GGUF version 1 is not supported/ });

  const good = await ggufWith(dir, 'arch.gguf', [['general.architecture', str('qwen2')], ['qwen2.block_count', u32(2)]]);
  t.equal((await inspectModel(good)).layers, 2);
  const truncated = path.join(dir, 'truncated.gguf');
  writeFileSync(truncated, readFileSync(good).subarray(0, 40));
  await t.rejects(inspectModel(truncated), { message: /damaged GGUF file: GGUF file truncated/ });

  const unknown = await ggufWith(dir, 'unknown.gguf', [['general.architecture', str('no-such-arch')], ['no-such-arch.block_count', u32(2)]]);
  await t.rejects(inspectModel(unknown), { message: /architecture "no-such-arch" is not supported/ });
  const noArch = await ggufWith(dir, 'noarch.gguf', [['general.name', str('x')]]);
  await t.rejects(inspectModel(noArch), { message: /no general\.architecture/ });
  const noBlocks = await ggufWith(dir, 'noblocks.gguf', [['general.architecture', str('llama')]]);
  await t.rejects(inspectModel(noBlocks), { message: /no llama\.block_count/ });
});

t.test("llama.cpp's architecture table is read from its source", async (t) => {
  const names = llamaArchitectures();
  t.ok(names, LLAMA_ARCH_SOURCE);
  for (const arch of ['llama', 'qwen2', 'phi3', 'gemma3']) t.ok(names!.has(arch), arch);
  t.notOk(names!.has('clip'), 'the quantizer-only entry is left out');
});
