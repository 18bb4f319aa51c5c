/**
 * GGUF v3 reader and streaming writer (the file format llama.cpp loads).
 *
 * Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, metadata key/values,
 * tensor infos (name, u32 n_dims, u64 dims, u32 ggml type, u64 offset into the data section),
 * padding up to `general.alignment`, then tensor data, each tensor padded to the alignment.
 * Everything is little-endian; strings are a u64 byte length followed by UTF-8 bytes.
 */
import { open, rm, type FileHandle } from 'node:fs/promises';

const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const GGUF_VERSION = 3;
const DEFAULT_ALIGNMENT = 32;
/** llama.cpp's GGML_MAX_NAME includes the terminating NUL. */
const MAX_TENSOR_NAME_BYTES = 63;
const MAX_DIMS = 4;

export type NumberType = 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32' | 'float64';
export type BigIntType = 'uint64' | 'int64';
export type GgufScalarType = NumberType | BigIntType | 'bool' | 'string';

/** A metadata value with its GGUF type, so it can be written back exactly as read. */
export type GgufValue =
  | { type: NumberType; value: number }
  | { type: BigIntType; value: bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | GgufArray;

/** GGUF arrays hold one scalar type; llama.cpp does not support nested arrays, nor do we. */
export type GgufArray =
  | { type: 'array'; itemType: NumberType; value: number[] }
  | { type: 'array'; itemType: BigIntType; value: bigint[] }
  | { type: 'array'; itemType: 'bool'; value: boolean[] }
  | { type: 'array'; itemType: 'string'; value: string[] };

/** Metadata in file order. */
export type GgufMetadata = Map<string, GgufValue>;

const VALUE_TYPE_IDS: Record<GgufScalarType | 'array', number> = {
  uint8: 0, int8: 1, uint16: 2, int16: 3, uint32: 4, int32: 5, float32: 6,
  bool: 7, string: 8, array: 9, uint64: 10, int64: 11, float64: 12,
};
const VALUE_TYPE_BY_ID = new Map(Object.entries(VALUE_TYPE_IDS).map(([name, id]) => [id, name as GgufScalarType | 'array']));

interface FixedCodec<T> {
  size: number;
  read(buf: Buffer, off: number): T;
  write(buf: Buffer, off: number, value: T): void;
}

const NUMBER_CODECS: Record<NumberType, FixedCodec<number>> = {
  uint8: { size: 1, read: (b, o) => b.readUInt8(o), write: (b, o, v) => b.writeUInt8(v, o) },
  int8: { size: 1, read: (b, o) => b.readInt8(o), write: (b, o, v) => b.writeInt8(v, o) },
  uint16: { size: 2, read: (b, o) => b.readUInt16LE(o), write: (b, o, v) => b.writeUInt16LE(v, o) },
  int16: { size: 2, read: (b, o) => b.readInt16LE(o), write: (b, o, v) => b.writeInt16LE(v, o) },
  uint32: { size: 4, read: (b, o) => b.readUInt32LE(o), write: (b, o, v) => b.writeUInt32LE(v, o) },
  int32: { size: 4, read: (b, o) => b.readInt32LE(o), write: (b, o, v) => b.writeInt32LE(v, o) },
  float32: { size: 4, read: (b, o) => b.readFloatLE(o), write: (b, o, v) => b.writeFloatLE(v, o) },
  float64: { size: 8, read: (b, o) => b.readDoubleLE(o), write: (b, o, v) => b.writeDoubleLE(v, o) },
};
const BIGINT_CODECS: Record<BigIntType, FixedCodec<bigint>> = {
  uint64: { size: 8, read: (b, o) => b.readBigUInt64LE(o), write: (b, o, v) => b.writeBigUInt64LE(v, o) },
  int64: { size: 8, read: (b, o) => b.readBigInt64LE(o), write: (b, o, v) => b.writeBigInt64LE(v, o) },
};
const BOOL_CODEC: FixedCodec<boolean> = {
  size: 1, read: (b, o) => b.readUInt8(o) !== 0, write: (b, o, v) => b.writeUInt8(v ? 1 : 0, o),
};

function isNumberType(type: string): type is NumberType {
  return type in NUMBER_CODECS;
}
function isBigIntType(type: string): type is BigIntType {
  return type in BIGINT_CODECS;
}

// ---------------------------------------------------------------------------------------------
// Tensor types

/** ggml tensor types this module can size (and the generator can encode). */
export const GgmlType = { F32: 0, F16: 1, Q8_0: 8 } as const;
export type GgmlType = (typeof GgmlType)[keyof typeof GgmlType];

/** Q8_0 block: an f16 scale followed by 32 int8 weights. */
const Q8_0_BLOCK_WEIGHTS = 32;
const Q8_0_BLOCK_BYTES = 34;

const BLOCK_LAYOUT: Record<GgmlType, { weights: number; bytes: number }> = {
  [GgmlType.F32]: { weights: 1, bytes: 4 },
  [GgmlType.F16]: { weights: 1, bytes: 2 },
  [GgmlType.Q8_0]: { weights: Q8_0_BLOCK_WEIGHTS, bytes: Q8_0_BLOCK_BYTES },
};

/** Bytes of one row (dims[0] weights) of a tensor of this type. */
export function rowByteLength(rowLength: number, type: GgmlType): number {
  const layout = BLOCK_LAYOUT[type];
  if (rowLength % layout.weights !== 0) {
    throw new Error(`row length ${rowLength} is not a multiple of the block size ${layout.weights}`);
  }
  return (rowLength / layout.weights) * layout.bytes;
}

/** Bytes of a whole tensor, unpadded. dims are in ggml order: dims[0] is the row length. */
export function tensorByteLength(dims: readonly number[], type: GgmlType): number {
  const rows = dims.slice(1).reduce((a, b) => a * b, 1);
  return rowByteLength(dims[0] ?? 1, type) * rows;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half-precision bits of a float, rounded to nearest even (Node 20 has no Float16Array). */
export function f32ToF16Bits(value: number): number {
  f32Scratch[0] = value;
  const bits = u32Scratch[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const rawExponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (rawExponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0); // inf, NaN
  const exponent = rawExponent - 127 + 15;
  if (exponent >= 0x1f) return sign | 0x7c00; // too large: infinity
  if (exponent <= 0) {
    // Subnormal half: shift the mantissa, implicit bit included, into place.
    const shift = 14 - exponent;
    if (shift > 24) return sign;
    return sign | roundShift(mantissa | 0x800000, shift);
  }
  // A rounding carry out of the mantissa correctly bumps the exponent (up to infinity).
  return sign | ((exponent << 10) + roundShift(mantissa, 13));
}

function roundShift(value: number, shift: number): number {
  const kept = value >>> shift;
  const rest = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rest > half || (rest === half && (kept & 1) === 1) ? kept + 1 : kept;
}

/** Float value of IEEE half-precision bits. */
export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa !== 0 ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/**
 * Encodes floats as tensor data of the given type into `out`; returns the bytes written.
 * values.length must be a whole number of blocks. Q8_0 follows ggml's reference quantizer.
 */
export function encodeTensorData(values: Float32Array, type: GgmlType, out: Buffer): number {
  const length = tensorByteLength([values.length], type);
  if (out.length < length) throw new Error(`output buffer too small: ${out.length} < ${length}`);
  // A plain copy: the host's floats are little-endian wherever llama.cpp runs.
  if (type === GgmlType.F32) out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  else if (type === GgmlType.F16) encodeF16(values, out);
  else encodeQ8_0(values, out);
  return length;
}

function encodeF16(values: Float32Array, out: Buffer): void {
  for (let i = 0; i < values.length; i++) {
    const half = f32ToF16Bits(values[i]!);
    out[2 * i] = half & 0xff;
    out[2 * i + 1] = half >>> 8;
  }
}

function encodeQ8_0(values: Float32Array, out: Buffer): void {
  for (let block = 0; block * Q8_0_BLOCK_WEIGHTS < values.length; block++) {
    const first = block * Q8_0_BLOCK_WEIGHTS;
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK_WEIGHTS; j++) amax = Math.max(amax, Math.abs(values[first + j]!));
    const scale = amax / 127;
    const inverse = scale !== 0 ? 1 / scale : 0;
    const at = block * Q8_0_BLOCK_BYTES;
    const half = f32ToF16Bits(scale);
    out[at] = half & 0xff;
    out[at + 1] = half >>> 8;
    for (let j = 0; j < Q8_0_BLOCK_WEIGHTS; j++) {
      const x = values[first + j]! * inverse;
      out[at + 2 + j] = Math.trunc(x < 0 ? x - 0.5 : x + 0.5) & 0xff; // C's roundf: halves away from 0
    }
  }
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

// ---------------------------------------------------------------------------------------------
// Reader

export interface GgufTensorInfo {
  name: string;
  /** ggml order: dims[0] is the innermost (row) length. */
  dims: number[];
  /** ggml type id; see GgmlType for the ones this module writes. */
  type: number;
  /** Byte offset of the data, relative to dataOffset. */
  offset: number;
}

export interface GgufHeader {
  version: number;
  metadata: GgufMetadata;
  tensors: GgufTensorInfo[];
  /** Absolute file offset where tensor data starts. */
  dataOffset: number;
  alignment: number;
}

/** Decodes one item at buf[at]: its value and end, or how many bytes from `at` it needs. */
type Decoder<T> = (buf: Buffer, at: number) => { value: T; end: number } | { need: number };

function fixedDecoder<T>(codec: FixedCodec<T>): Decoder<T> {
  return (buf, at) =>
    at + codec.size <= buf.length ? { value: codec.read(buf, at), end: at + codec.size } : { need: codec.size };
}

/** u64 counts, lengths and offsets; they must fit a JS number to be usable anyway. */
function safeNumber(value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`GGUF value ${value} too large`);
  return Number(value);
}

const decodeU32 = fixedDecoder(NUMBER_CODECS.uint32);
const decodeU64: Decoder<number> = (buf, at) =>
  at + 8 <= buf.length ? { value: safeNumber(buf.readBigUInt64LE(at)), end: at + 8 } : { need: 8 };
const decodeString: Decoder<string> = (buf, at) => {
  if (at + 8 > buf.length) return { need: 8 };
  const end = at + 8 + safeNumber(buf.readBigUInt64LE(at));
  return end <= buf.length ? { value: buf.toString('utf8', at + 8, end), end } : { need: end - at };
};
const NUMBER_DECODERS = mapValues(NUMBER_CODECS, fixedDecoder);
const BIGINT_DECODERS = mapValues(BIGINT_CODECS, fixedDecoder);
const decodeBool = fixedDecoder(BOOL_CODEC);

function mapValues<K extends string, A, B>(record: Record<K, A>, f: (a: A) => B): Record<K, B> {
  return Object.fromEntries(Object.entries(record).map(([k, v]) => [k, f(v as A)])) as Record<K, B>;
}

/**
 * Reads a file sequentially through a window, so big files are never read whole. Items are decoded
 * synchronously from the window, awaiting only to slide it: vocabularies hold 150k+ strings each.
 */
class FileCursor {
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  private pos = 0;

  constructor(private readonly fh: FileHandle, private readonly chunkSize = 1 << 20) {}

  get offset(): number {
    return this.bufStart + this.pos;
  }

  async items<T>(count: number, decode: Decoder<T>): Promise<T[]> {
    const items: T[] = [];
    while (items.length < count) {
      const item = decode(this.buf, this.pos);
      if ('need' in item) {
        await this.slide(item.need);
      } else {
        items.push(item.value);
        this.pos = item.end;
      }
    }
    return items;
  }

  async one<T>(decode: Decoder<T>): Promise<T> {
    const [item] = await this.items(1, decode);
    return item!;
  }

  /** Moves the window to start at the cursor, holding at least `n` bytes. */
  private async slide(n: number): Promise<void> {
    const start = this.offset;
    const buf = Buffer.allocUnsafe(Math.max(n, this.chunkSize));
    const { bytesRead } = await this.fh.read(buf, 0, buf.length, start);
    if (bytesRead < n) throw new Error(`GGUF file truncated at byte ${start + bytesRead}`);
    this.buf = buf.subarray(0, bytesRead);
    this.bufStart = start;
    this.pos = 0;
  }
}

async function readValueType(cursor: FileCursor): Promise<GgufScalarType | 'array'> {
  const id = await cursor.one(decodeU32);
  const type = VALUE_TYPE_BY_ID.get(id);
  if (type === undefined) throw new Error(`unknown GGUF value type ${id}`);
  return type;
}

async function readScalar(cursor: FileCursor, type: GgufScalarType): Promise<GgufValue> {
  if (isNumberType(type)) return { type, value: await cursor.one(NUMBER_DECODERS[type]) };
  if (isBigIntType(type)) return { type, value: await cursor.one(BIGINT_DECODERS[type]) };
  if (type === 'bool') return { type, value: await cursor.one(decodeBool) };
  return { type, value: await cursor.one(decodeString) };
}

async function readArray(cursor: FileCursor): Promise<GgufArray> {
  const itemType = await readValueType(cursor);
  const count = await cursor.one(decodeU64);
  if (itemType === 'array') throw new Error('nested GGUF arrays are not supported');
  if (isNumberType(itemType)) {
    return { type: 'array', itemType, value: await cursor.items(count, NUMBER_DECODERS[itemType]) };
  }
  if (isBigIntType(itemType)) {
    return { type: 'array', itemType, value: await cursor.items(count, BIGINT_DECODERS[itemType]) };
  }
  if (itemType === 'bool') return { type: 'array', itemType, value: await cursor.items(count, decodeBool) };
  return { type: 'array', itemType, value: await cursor.items(count, decodeString) };
}

async function readValue(cursor: FileCursor): Promise<GgufValue> {
  const type = await readValueType(cursor);
  return type === 'array' ? readArray(cursor) : readScalar(cursor, type);
}

async function readTensorInfo(cursor: FileCursor): Promise<GgufTensorInfo> {
  const name = await cursor.one(decodeString);
  const nDims = await cursor.one(decodeU32);
  if (nDims > MAX_DIMS) throw new Error(`tensor ${name} has ${nDims} dims`);
  const dims = await cursor.items(nDims, decodeU64);
  const type = await cursor.one(decodeU32);
  const offset = await cursor.one(decodeU64);
  return { name, dims, type, offset };
}

/** The alignment a file (or writer) uses: general.alignment when present, else 32. */
export function metadataAlignment(metadata: GgufMetadata): number {
  const entry = metadata.get('general.alignment');
  if (entry === undefined) return DEFAULT_ALIGNMENT;
  if (entry.type !== 'uint32' || entry.value <= 0 || (entry.value & (entry.value - 1)) !== 0) {
    throw new Error('general.alignment must be a uint32 power of two');
  }
  return entry.value;
}

/** Reads metadata and tensor infos (not tensor data) of a GGUF file. */
export async function readGgufHeader(path: string): Promise<GgufHeader> {
  const fh = await open(path, 'r');
  try {
    const cursor = new FileCursor(fh);
    const magic = await cursor.one(decodeU32);
    if (magic !== GGUF_MAGIC) throw new Error(`${path} is not a GGUF file`);
    const version = await cursor.one(decodeU32);
    // v1 used 32-bit counts; a byte-swapped version means a big-endian file.
    if (version !== 2 && version !== 3) throw new Error(`unsupported GGUF version ${version}`);
    const tensorCount = await cursor.one(decodeU64);
    const kvCount = await cursor.one(decodeU64);
    const metadata: GgufMetadata = new Map();
    for (let i = 0; i < kvCount; i++) {
      const key = await cursor.one(decodeString);
      metadata.set(key, await readValue(cursor));
    }
    const tensors: GgufTensorInfo[] = [];
    for (let i = 0; i < tensorCount; i++) tensors.push(await readTensorInfo(cursor));
    const alignment = metadataAlignment(metadata);
    // Like llama.cpp, a file without tensors (e.g. a vocab-only file) has no padding at the end.
    const dataOffset = tensors.length > 0 ? alignUp(cursor.offset, alignment) : cursor.offset;
    return { version, metadata, tensors, dataOffset, alignment };
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface GgufTensorSource {
  name: string;
  /** ggml order: dims[0] is the innermost (row) length. */
  dims: readonly number[];
  type: GgmlType;
  /**
   * Yields the tensor's bytes in order, in chunks; together exactly tensorByteLength(dims, type).
   * Each chunk is written before the next is requested, so a producer may reuse one buffer.
   */
  data(): Iterable<Uint8Array> | AsyncIterable<Uint8Array>;
}

export interface GgufFile {
  metadata: GgufMetadata;
  tensors: readonly GgufTensorSource[];
}

/** Growable little-endian byte buffer for the header, which is small next to the tensor data. */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number): number {
    if (this.length + n > this.buf.length) {
      const grown = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
      this.buf.copy(grown, 0, 0, this.length);
      this.buf = grown;
    }
    const at = this.length;
    this.length += n;
    return at;
  }

  fixed<T>(codec: FixedCodec<T>, value: T): void {
    const at = this.reserve(codec.size); // before reading this.buf: reserving may replace it
    codec.write(this.buf, at, value);
  }

  u32(value: number): void {
    this.fixed(NUMBER_CODECS.uint32, value);
  }

  u64(value: number): void {
    this.fixed(BIGINT_CODECS.uint64, BigInt(value));
  }

  string(value: string): void {
    const length = Buffer.byteLength(value, 'utf8');
    this.u64(length);
    const at = this.reserve(length);
    this.buf.write(value, at, 'utf8');
  }

  zeros(n: number): void {
    const at = this.reserve(n);
    this.buf.fill(0, at, this.length);
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function writeScalar(sink: ByteSink, value: Exclude<GgufValue, GgufArray>): void {
  if (value.type === 'string') sink.string(value.value);
  else if (value.type === 'bool') sink.fixed(BOOL_CODEC, value.value);
  else if (isBigIntType(value.type)) sink.fixed(BIGINT_CODECS[value.type], value.value as bigint);
  else sink.fixed(NUMBER_CODECS[value.type], value.value as number);
}

function writeArray(sink: ByteSink, array: GgufArray): void {
  sink.u32(VALUE_TYPE_IDS[array.itemType]);
  sink.u64(array.value.length);
  for (const item of array.value) {
    writeScalar(sink, { type: array.itemType, value: item } as Exclude<GgufValue, GgufArray>);
  }
}

function writeValue(sink: ByteSink, value: GgufValue): void {
  sink.u32(VALUE_TYPE_IDS[value.type]);
  if (value.type === 'array') writeArray(sink, value);
  else writeScalar(sink, value);
}

function validateTensors(tensors: readonly GgufTensorSource[]): void {
  const names = new Set<string>();
  for (const { name, dims, type } of tensors) {
    if (Buffer.byteLength(name) > MAX_TENSOR_NAME_BYTES) throw new Error(`tensor name too long: ${name}`);
    if (names.has(name)) throw new Error(`duplicate tensor name: ${name}`);
    if (dims.length === 0 || dims.length > MAX_DIMS) throw new Error(`tensor ${name} has ${dims.length} dims`);
    names.add(name);
    tensorByteLength(dims, type); // throws on a row length that is not a whole number of blocks
  }
}

/** Serializes everything before the data section, including the padding that aligns it. */
function encodeHeader(file: GgufFile, alignment: number): Buffer {
  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(GGUF_VERSION);
  sink.u64(file.tensors.length);
  sink.u64(file.metadata.size);
  for (const [key, value] of file.metadata) {
    sink.string(key);
    writeValue(sink, value);
  }
  // llama.cpp requires each offset to equal the padded sizes of all tensors before it.
  let offset = 0;
  for (const tensor of file.tensors) {
    sink.string(tensor.name);
    sink.u32(tensor.dims.length);
    for (const dim of tensor.dims) sink.u64(dim);
    sink.u32(tensor.type);
    sink.u64(offset);
    offset += alignUp(tensorByteLength(tensor.dims, tensor.type), alignment);
  }
  if (file.tensors.length > 0) sink.zeros(alignUp(sink.length, alignment) - sink.length);
  return sink.bytes();
}

/** Appends to a file handle, tracking the position so tensors can be padded. */
class FileAppender {
  position = 0;

  constructor(private readonly fh: FileHandle) {}

  async write(chunk: Uint8Array): Promise<void> {
    let done = 0;
    while (done < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, done, chunk.length - done, this.position);
      done += bytesWritten;
      this.position += bytesWritten;
    }
  }

  async padTo(alignment: number): Promise<void> {
    const padding = alignUp(this.position, alignment) - this.position;
    if (padding > 0) await this.write(new Uint8Array(padding));
  }
}

async function writeTensorData(out: FileAppender, tensor: GgufTensorSource, alignment: number): Promise<void> {
  const expected = tensorByteLength(tensor.dims, tensor.type);
  let received = 0;
  for await (const chunk of tensor.data()) {
    received += chunk.length;
    if (received > expected) break;
    await out.write(chunk);
  }
  if (received !== expected) {
    throw new Error(`tensor ${tensor.name}: data source gave a wrong byte count, expected ${expected}`);
  }
  await out.padTo(alignment);
}

/**
 * Writes a GGUF v3 file, streaming tensor data from each source in turn, so the whole model is
 * never held in memory. The alignment is general.alignment when set, else llama.cpp's default 32.
 * A failed write removes the partial file.
 */
export async function writeGguf(path: string, file: GgufFile): Promise<void> {
  validateTensors(file.tensors);
  const alignment = metadataAlignment(file.metadata);
  const fh = await open(path, 'w');
  try {
    const out = new FileAppender(fh);
    await out.write(encodeHeader(file, alignment));
    for (const tensor of file.tensors) await writeTensorData(out, tensor, alignment);
  } catch (err) {
    await fh.close();
    await rm(path, { force: true });
    throw err;
  }
  await fh.close();
}
