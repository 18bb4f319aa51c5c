import t from 'tap';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import {
  encodeTensorData,
  f16BitsToF32,
  f32ToF16Bits,
  GgmlType,
  readGgufHeader,
  tensorByteLength,
  writeGguf,
  type GgufHeader,
  type GgufMetadata,
  type GgufTensorSource,
} from '../src/model/gguf.js';
import { MODEL_PRESETS, qwen2Tensors } from '../src/model/random-model.js';
import { llamaVocabPath, sharedModelPath, TINY_WEIGHT_STD, tinyModelPath } from './helpers/models.js';

const REFERENCE_MODEL = 'random-qwen2-tiny-10m-q8_0.gguf';

const allTypesMetadata: GgufMetadata = new Map([
  ['general.alignment', { type: 'uint32', value: 64 }],
  ['t.u8', { type: 'uint8', value: 255 }],
  ['t.i8', { type: 'int8', value: -128 }],
  ['t.u16', { type: 'uint16', value: 65535 }],
  ['t.i16', { type: 'int16', value: -32768 }],
  ['t.u32', { type: 'uint32', value: 4294967295 }],
  ['t.i32', { type: 'int32', value: -2147483648 }],
  ['t.u64', { type: 'uint64', value: 18446744073709551615n }],
  ['t.i64', { type: 'int64', value: -9223372036854775808n }],
  ['t.f32', { type: 'float32', value: 1.5 }],
  ['t.f64', { type: 'float64', value: Math.PI }],
  ['t.bool', { type: 'bool', value: true }],
  ['t.string', { type: 'string', value: 'héllo, 世界 🙂' }],
  ['t.empty', { type: 'string', value: '' }],
  ['t.strings', { type: 'array', itemType: 'string', value: ['a', '', 'Ġ Ġ', '<|im_end|>'] }],
  ['t.int32s', { type: 'array', itemType: 'int32', value: [1, -2, 3] }],
  ['t.uint64s', { type: 'array', itemType: 'uint64', value: [0n, 1n << 40n] }],
  ['t.float32s', { type: 'array', itemType: 'float32', value: [0.5, -0.25] }],
  ['t.bools', { type: 'array', itemType: 'bool', value: [true, false] }],
  ['t.nothing', { type: 'array', itemType: 'uint8', value: [] }],
]);

/** A tensor whose bytes are i mod 251, delivered in uneven chunks. */
function patternTensor(name: string, dims: number[], type: GgmlType): GgufTensorSource {
  const bytes = Buffer.alloc(tensorByteLength(dims, type), 0);
  for (let i = 0; i < bytes.length; i++) bytes[i] = i % 251;
  return {
    name, dims, type,
    *data() {
      for (let at = 0; at < bytes.length; at += 7) yield bytes.subarray(at, at + 7);
    },
  };
}

async function readBytes(path: string, position: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, position);
    return buf;
  } finally {
    await fh.close();
  }
}

function tensorSummary(header: GgufHeader) {
  return header.tensors.map(({ name, dims, type }) => ({ name, dims, type }));
}

t.test('metadata of every type and tensor infos round-trip', async (t) => {
  const path = join(t.testdir(), 'roundtrip.gguf');
  const tensors = [
    patternTensor('a.f32', [3], GgmlType.F32),
    patternTensor('b.f16', [5, 3], GgmlType.F16),
    patternTensor('c.q8_0', [64, 2, 3], GgmlType.Q8_0),
  ];
  await writeGguf(path, { metadata: allTypesMetadata, tensors });
  const header = await readGgufHeader(path);

  t.equal(header.version, 3);
  t.equal(header.alignment, 64);
  t.same([...header.metadata], [...allTypesMetadata]);
  t.same(tensorSummary(header), [
    { name: 'a.f32', dims: [3], type: GgmlType.F32 },
    { name: 'b.f16', dims: [5, 3], type: GgmlType.F16 },
    { name: 'c.q8_0', dims: [64, 2, 3], type: GgmlType.Q8_0 },
  ]);
  t.same(header.tensors.map((x) => x.offset), [0, 64, 128], 'each tensor padded to the alignment');
  t.equal(header.dataOffset % 64, 0);
  for (const [i, info] of header.tensors.entries()) {
    const length = tensorByteLength(info.dims, info.type as GgmlType);
    const written = Buffer.concat([...(tensors[i]!.data() as Iterable<Uint8Array>)]);
    t.same(await readBytes(path, header.dataOffset + info.offset, length), written, `${info.name} data`);
  }
  t.equal((await stat(path)).size, header.dataOffset + 128 + 448, 'file ends with a padded tensor');
});

t.test('writer rejects malformed tensors', async (t) => {
  const path = join(t.testdir(), 'bad.gguf');
  const metadata: GgufMetadata = new Map();
  const ragged: GgufTensorSource = { name: 'q', dims: [48], type: GgmlType.Q8_0, data: () => [] };
  await t.rejects(writeGguf(path, { metadata, tensors: [ragged] }), /block size/);
  const short: GgufTensorSource = { name: 's', dims: [4], type: GgmlType.F32, data: () => [Buffer.alloc(8)] };
  await t.rejects(writeGguf(path, { metadata, tensors: [short] }), /wrong byte count/);
  await t.rejects(stat(path), 'no partial file is left');
  const twice = patternTensor('x', [4], GgmlType.F32);
  await t.rejects(writeGguf(path, { metadata, tensors: [twice, twice] }), /duplicate/);
});

t.test('f16 conversion', async (t) => {
  const cases: [number, number][] = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.1, 0x2e66], [65504, 0x7bff],
    [65520, 0x7c00], [Infinity, 0x7c00], [2 ** -24, 0x0001], [2 ** -26, 0x0000], [6.1e-5, 0x03ff],
  ];
  for (const [value, bits] of cases) t.equal(f32ToF16Bits(value), bits, `f16(${value})`);
  t.equal(f32ToF16Bits(NaN) & 0x7e00, 0x7e00, 'NaN stays NaN');
  t.equal(f16BitsToF32(0x3555), 0.333251953125);
});

t.test('Q8_0 encoding keeps values within half a quantization step', async (t) => {
  const values = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) * (i < 32 ? 0.05 : 3));
  const out = Buffer.alloc(68);
  t.equal(encodeTensorData(values, GgmlType.Q8_0, out), 68);
  for (let block = 0; block < 2; block++) {
    const scale = f16BitsToF32(out.readUInt16LE(block * 34));
    for (let j = 0; j < 32; j++) {
      const value = values[block * 32 + j]!;
      const error = Math.abs(out.readInt8(block * 34 + 2 + j) * scale - value);
      if (error > scale * 0.51 + Math.abs(value) * 1e-3) t.fail(`value ${block * 32 + j} off by ${error}`);
    }
  }

});

t.test('reads the shared reference model', { skip: !sharedModelPath(REFERENCE_MODEL) && 'no shared models' }, async (t) => {
  const header = await readGgufHeader(sharedModelPath(REFERENCE_MODEL)!);
  t.equal(header.metadata.get('general.architecture')?.value, 'qwen2');
  t.equal(header.tensors.length, 2 + 2 * 12);
  t.same(header.tensors[0], { name: 'token_embd.weight', dims: [64, 151936], type: GgmlType.Q8_0, offset: 0 });
});

t.test('generated tiny model', async (t) => {
  const header = await readGgufHeader(await tinyModelPath());
  const vocab = await readGgufHeader(llamaVocabPath('qwen2'));

  t.test('has the tensors llama.cpp expects', async (t) => {
    t.same(tensorSummary(header), qwen2Tensors(MODEL_PRESETS.tiny, 151936).map(({ name, dims, type }) => ({ name, dims, type })));
    t.same(header.tensors.find((x) => x.name === 'blk.1.ffn_down.weight')?.dims, [128, 64]);
    t.same(header.tensors.find((x) => x.name === 'blk.0.attn_k.bias')?.dims, [32]);
  });

  t.test('copies the tokenizer verbatim', async (t) => {
    const tokenizerKeys = [...vocab.metadata.keys()].filter((key) => key.startsWith('tokenizer.'));
    t.ok(tokenizerKeys.includes('tokenizer.chat_template'));
    // isDeepStrictEqual: tap's t.same is slow on arrays of 150k tokens.
    for (const key of tokenizerKeys) t.ok(isDeepStrictEqual(header.metadata.get(key), vocab.metadata.get(key)), key);
  });

  t.test('has random matrices and unit norms', async (t) => {
    const embd = header.tensors[0]!;
    const blocks = await readBytes(await tinyModelPath(), header.dataOffset + embd.offset, 34 * 1000);
    let sum = 0;
    let squares = 0;
    for (let block = 0; block < 1000; block++) {
      const scale = f16BitsToF32(blocks.readUInt16LE(block * 34));
      for (let j = 0; j < 32; j++) {
        const value = blocks.readInt8(block * 34 + 2 + j) * scale;
        sum += value;
        squares += value * value;
      }
    }
    const n = 32000;
    t.ok(Math.abs(sum / n) < TINY_WEIGHT_STD / 20, 'mean near 0');
    t.ok(Math.abs(Math.sqrt(squares / n) - TINY_WEIGHT_STD) < TINY_WEIGHT_STD / 10, `std near ${TINY_WEIGHT_STD}`);
    const norm = header.tensors.find((x) => x.name === 'output_norm.weight')!;
    const ones = await readBytes(await tinyModelPath(), header.dataOffset + norm.offset, 64 * 4);
    t.same(new Float32Array(ones.buffer, ones.byteOffset, 64), new Float32Array(64).fill(1));
  });

  const referencePath = sharedModelPath(REFERENCE_MODEL);
  t.test('matches the reference model\'s layout', { skip: !referencePath && 'no shared models' }, async (t) => {
    const reference = await readGgufHeader(referencePath!);
    t.same(tensorSummary(header), tensorSummary(reference));
    t.same([...header.metadata.keys()], [...reference.metadata.keys()]);
    for (const [key, value] of reference.metadata) t.equal(header.metadata.get(key)?.type, value.type, `${key} type`);
  });
});
