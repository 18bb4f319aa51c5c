// Model preflight: GGUF checks on good, garbage and unsupported files, and the memory estimate's arithmetic.
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { writeGguf, type GgufMetadata, type GgufValue } from '../src/model/gguf.js';
import { LLAMA_ARCH_SOURCE, llamaArchitectures } from '../src/model/llama-architectures.js';
import { estimateMemory, fitContext, inspectModel, kvBytesPerToken, memoryAdvice, preflight } from '../src/model/preflight.js';
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

t.test('the tiny model passes and its KV size follows its shape', async (t) => {
  const model = await tinyModelPath();
  const facts = await inspectModel(model);
  const shape = MODEL_PRESETS.tiny;
  t.equal(facts.architecture, 'qwen2');
  t.equal(facts.version, 3);
  t.equal(facts.layers, shape.layers);
  const headDim = shape.embd / shape.heads;
  t.equal(facts.kvBytesPerToken, shape.layers * shape.kvHeads * 2 * headDim * 2, 'layers x kv heads x (k + v) x f16');
  const { memory } = await preflight(model, { slots: 2, contextPerSlot: 1024, checkMemory: true });
  t.equal(memory.kvCache, facts.kvBytesPerToken * 2 * 1024);
  t.ok(memory.fits);
});

t.test('memory estimate: weights + KV for slots x context + margin', async (t) => {
  // Phi-3-mini's shape: 32 layers, 32 KV heads of 96 (no GQA): 384 KiB of f16 KV per token.
  const perToken = 32 * 32 * (96 + 96) * 2;
  t.equal(perToken, 384 * 1024);
  const facts = { path: 'phi.gguf', fileBytes: 2.4 * GIB, kvBytesPerToken: perToken };
  const m = estimateMemory(facts, { slots: 4, contextPerSlot: 32768 }, 16 * GIB);
  t.equal(m.weights, 2.4 * GIB);
  t.equal(m.kvCache, 48 * GIB);
  t.equal(m.margin, 512 * MIB, 'at least 512 MiB');
  t.equal(m.total, m.weights + m.kvCache + m.margin);
  t.equal(m.available, 16 * GIB);
  t.notOk(m.fits);
  t.equal(estimateMemory({ fileBytes: 8 * GIB, kvBytesPerToken: 0 }, { slots: 1, contextPerSlot: 256 }, GIB).margin, Math.ceil(0.8 * GIB), 'a tenth of bigger weights');

  const advice = memoryAdvice(facts, { slots: 4, contextPerSlot: 32768 }, m);
  t.match(advice, /phi\.gguf needs about 50\.9 GiB of memory, but this machine has 16\.0 GiB/);
  t.match(advice, /weights 2\.4 GiB \+ KV cache 48\.0 GiB \(4 slots x 32768 tokens, 384 KiB per token\) \+ margin 0\.5 GiB/);
  // (16 - 2.4 - 0.5) GiB / 384 KiB = 35,772 tokens: 8,704 per slot for 4 slots, or 1 slot of 32768.
  t.match(advice, /Try engine\.context_per_slot = 8704 \(with 4 slots\), or engine\.slots = 1 \(with 32768 tokens each\)/);
  t.match(advice, /model\.check_memory = false/);

  const tooBig = { path: 'big.gguf', fileBytes: 20 * GIB, kvBytesPerToken: perToken };
  t.match(memoryAdvice(tooBig, { slots: 1, contextPerSlot: 256 }, estimateMemory(tooBig, { slots: 1, contextPerSlot: 256 }, 16 * GIB)), /weights alone do not fit/);
  const oneSlot = estimateMemory(facts, { slots: 2, contextPerSlot: 65536 }, 8 * GIB);
  // (8 - 2.4 - 0.5) GiB / 384 KiB = 13,926 tokens: not one slot of 65536.
  t.match(memoryAdvice(facts, { slots: 2, contextPerSlot: 65536 }, oneSlot), /Try engine\.context_per_slot = 6912 \(with 2 slots\):/);
});

t.test('a default context is lowered to what fits, down to a floor', async (t) => {
  const facts = { fileBytes: 2.4 * GIB, kvBytesPerToken: 384 * 1024 };
  // (16 - 2.4 - 0.5) GiB / 384 KiB = 35,772 tokens: 8,704 per slot for 4 slots, 17,664 for 2.
  t.equal(fitContext(facts, { slots: 4, contextPerSlot: 32768 }, 16 * GIB), 8704);
  t.equal(fitContext(facts, { slots: 2, contextPerSlot: 32768 }, 16 * GIB), 17664);
  t.equal(fitContext(facts, { slots: 1, contextPerSlot: 16384 }, 16 * GIB), 16384, 'never above the asked context');
  t.equal(fitContext(facts, { slots: 8, contextPerSlot: 32768 }, 16 * GIB), undefined, 'below 8192 per slot: refused');
  const model = await tinyModelPath();
  const fitted = await preflight(model, { slots: 2, contextPerSlot: 1 << 20, checkMemory: true, fitContext: true, available: 600 * MIB });
  t.ok(fitted.memory.fits);
  t.ok(fitted.contextPerSlot >= 8192 && fitted.contextPerSlot < 1 << 20, `fitted ${fitted.contextPerSlot}`);
});

t.test('a model that does not fit is refused unless the check is off', async (t) => {
  const model = await tinyModelPath();
  const run = { slots: 4, contextPerSlot: 1024 };
  await t.rejects(preflight(model, { ...run, checkMemory: true, available: 100 * MIB }), { name: 'PreflightError', message: /needs about .* but this machine has 0\.1 GiB/ });
  t.equal((await preflight(model, { ...run, checkMemory: false, available: 100 * MIB })).memory.fits, false);
});

t.test('KV per token: GQA, explicit key/value lengths, per-layer head counts', async (t) => {
  const meta = (entries: [string, GgufValue][]): GgufMetadata => new Map(entries);
  t.equal(kvBytesPerToken(meta([['a.embedding_length', u32(4096)], ['a.attention.head_count', u32(32)], ['a.attention.head_count_kv', u32(8)]]), 'a', 2), 2 * 8 * 256 * 2);
  t.equal(
    kvBytesPerToken(meta([['a.attention.head_count', u32(8)], ['a.attention.key_length', u32(192)], ['a.attention.value_length', u32(128)]]), 'a', 1),
    8 * 320 * 2,
  );
  const perLayer: GgufValue = { type: 'array', itemType: 'uint32', value: [4, 0, 2] };
  t.equal(kvBytesPerToken(meta([['a.embedding_length', u32(512)], ['a.attention.head_count', u32(8)], ['a.attention.head_count_kv', perLayer]]), 'a', 3), (4 + 0 + 2) * 128 * 2);
  t.equal(kvBytesPerToken(meta([]), 'a', 4), 0, 'no attention (recurrent): no KV');
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
