// A random-weight model that ends its answers: a copy of a Q8_0 model whose (tied) embedding row of the
// end-of-turn token is scaled up, so that its logit is far above or below all others, and sampling at
// temperature 1 ends a turn within a few tokens. Claude Code treats an answer cut at max_tokens as a
// failed compaction summary; with this model, its summaries (gibberish, but finished) come through.
import { copyFileSync, openSync, readSync, writeSync, closeSync } from 'node:fs';
import { f16BitsToF32, f32ToF16Bits, GgmlType, readGgufHeader, rowByteLength } from '../../src/model/gguf.js';

const Q8_0_BLOCK_BYTES = 34;

/** Writes to `to` a copy of `from` whose embedding row for `token` is `factor` times larger. */
export async function endingModel(from: string, to: string, token: number, factor = 64): Promise<string> {
  copyFileSync(from, to);
  const header = await readGgufHeader(to);
  const embd = header.tensors.find((tensor) => tensor.name === 'token_embd.weight');
  if (!embd || embd.type !== GgmlType.Q8_0) throw new Error('expected a Q8_0 token_embd.weight');
  const rowBytes = rowByteLength(embd.dims[0], GgmlType.Q8_0);
  const row = Buffer.alloc(rowBytes);
  const at = header.dataOffset + embd.offset + token * rowBytes;
  const fd = openSync(to, 'r+');
  try {
    readSync(fd, row, 0, rowBytes, at);
    // Each block is an f16 scale and 32 int8 values: scaling the scale scales the block.
    for (let b = 0; b < rowBytes; b += Q8_0_BLOCK_BYTES) row.writeUInt16LE(f32ToF16Bits(f16BitsToF32(row.readUInt16LE(b)) * factor), b);
    writeSync(fd, row, 0, rowBytes, at);
  } finally {
    closeSync(fd);
  }
  return to;
}
