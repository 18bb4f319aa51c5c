// Cached prefixes on disk, so they survive a restart: the KV state of a slot's tokens, saved when the
// engine is idle or shutting down and loaded when a new request starts with those tokens. The index is
// the engine thread's, used synchronously (it has no event loop to wait on); files are written by
// writePrefix and read by readPrefix, on the prompt cache's file thread (src/engine/prompt-files.ts).
//
// One folder per model (keyed by a fingerprint of the model file), one file per prefix, named by a hash
// of its tokens:
//   8 bytes   magic "PNSVPC01"
//   uint32    n: byte length of the JSON header that follows
//   n bytes   JSON header: { tokens, stateBytes, sha256 } (sha256 of the tokens' and the state's bytes)
//   tokens    int32 each
//   state     llama.cpp's serialized sequence state with its stream count taken out (see below)
// A file that fails any check is deleted and the request is served cold. The folder is kept under its
// byte budget by deleting the least recently used files.
import { createHash } from 'node:crypto';
import {
  closeSync, fstatSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, statSync, utimesSync, writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { commonPrefixLength } from './prefix-cache.js';

const MAGIC = Buffer.from('PNSVPC01');
const SUFFIX = '.kv';

export interface StoredPrefix {
  file: string;
  tokens: Int32Array;
  bytes: number;
  lastUsed: number;
}

interface Header {
  tokens: number;
  stateBytes: number;
  sha256: string;
}

/** Size and a hash of the head and tail of the model file: cheap, and changes when the file does. */
export function modelFingerprint(modelPath: string): string {
  const fd = openSync(modelPath, 'r');
  try {
    const size = fstatSync(fd).size;
    const hash = createHash('sha256').update(String(size));
    const chunk = Buffer.alloc(Math.min(size, 4 << 20));
    for (const at of [0, Math.max(0, size - chunk.length)]) hash.update(chunk.subarray(0, readSync(fd, chunk, 0, chunk.length, at)));
    return hash.digest('hex').slice(0, 24);
  } finally {
    closeSync(fd);
  }
}

// llama.cpp's sequence state is [magic u32][seq id u32][stream count u32], then per stream a cell count
// and, when not zero, that stream's cells. The engine's pool is one stream, so the file keeps the first two
// words and that stream, without the count (files written when each slot had a stream of its own were
// packed the same way, and still load).
const PREAMBLE = 8;

/** The state's parts to write, as views into `state` (no copy: it can be hundreds of MB); undefined when it is not one stream with cells. */
function packState(state: Buffer): Buffer[] | undefined {
  if (state.length < PREAMBLE + 8 || state.readUInt32LE(PREAMBLE) !== 1 || state.readUInt32LE(PREAMBLE + 4) === 0) return undefined;
  return [state.subarray(0, PREAMBLE), state.subarray(PREAMBLE + 4)];
}

/** The file in `dir` that the prefix `tokens` is saved to: named by a hash of its tokens. */
export function prefixFile(dir: string, tokens: Int32Array): string {
  const tokenBytes = Buffer.from(tokens.buffer, tokens.byteOffset, tokens.byteLength);
  return join(dir, `${createHash('sha256').update(tokenBytes).digest('hex').slice(0, 32)}${SUFFIX}`);
}

/**
 * Writes a slot's state for `tokens` into the folder `dir` (under a temporary name, then renamed, so that a
 * reader never sees half a file); returns the file and its size. Throws when the state is not a slot's or
 * the write fails. Any thread may call it: hashing and writing a large state takes a while.
 */
export function writePrefix(dir: string, tokens: Int32Array, state: Buffer): { file: string; bytes: number } {
  const packed = packState(state);
  if (!packed) throw new Error('unexpected KV state layout');
  const tokenBytes = Buffer.from(tokens.buffer, tokens.byteOffset, tokens.byteLength);
  const stateBytes = packed.reduce((n, part) => n + part.length, 0);
  const hash = createHash('sha256').update(tokenBytes);
  for (const part of packed) hash.update(part);
  const sha256 = hash.digest('hex');
  const header = Buffer.from(JSON.stringify({ tokens: tokens.length, stateBytes, sha256 } satisfies Header));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(header.length);
  const file = prefixFile(dir, tokens);
  const temporary = `${file}.tmp`;
  try {
    const fd = openSync(temporary, 'w');
    try {
      for (const part of [MAGIC, length, header, tokenBytes, ...packed]) writeSync(fd, part);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, file);
  } catch (err) {
    rmSync(temporary, { force: true });
    throw new Error(`could not write ${file}: ${(err as Error).message}`);
  }
  return { file, bytes: MAGIC.length + 4 + header.length + tokenBytes.length + stateBytes };
}

export class PromptStore {
  private readonly entries = new Map<string, StoredPrefix>();
  /** This model's folder. */
  readonly dir: string;

  constructor(folder: string, modelKey: string, private readonly maxBytes: number, private readonly log: (message: string) => void) {
    this.dir = join(folder, modelKey);
    mkdirSync(this.dir, { recursive: true });
    for (const name of readdirSync(this.dir)) {
      const file = join(this.dir, name);
      if (name.endsWith('.tmp')) this.remove(file); // an interrupted save
      if (!name.endsWith(SUFFIX)) continue;
      const entry = this.readIndex(file);
      if (entry) this.entries.set(file, entry);
      else this.discard(file, 'unreadable header');
    }
  }

  get size(): number {
    return this.entries.size;
  }

  /** The stored prefixes. */
  list(): StoredPrefix[] {
    return [...this.entries.values()];
  }

  /** The stored prefix sharing the most tokens with `prompt`. */
  longest(prompt: Int32Array): { entry: StoredPrefix; shared: number } | undefined {
    let best: { entry: StoredPrefix; shared: number } | undefined;
    for (const entry of this.entries.values()) {
      const shared = commonPrefixLength(entry.tokens, prompt);
      if (shared > (best?.shared ?? 0)) best = { entry, shared };
    }
    return best;
  }

  /** Saves a slot's state for `tokens` here and now (see writePrefix) and indexes it. */
  save(tokens: Int32Array, state: Buffer): void {
    try {
      const { file, bytes } = writePrefix(this.dir, tokens, state);
      this.add(file, tokens, bytes);
    } catch (err) {
      this.log(`prompt cache: not saved: ${(err as Error).message}`);
    }
  }

  /** Indexes a file that writePrefix wrote; stored prefixes of its tokens become redundant and go. */
  add(file: string, tokens: Int32Array, bytes: number): void {
    this.entries.set(file, { file, tokens: tokens.slice(), bytes, lastUsed: Date.now() });
    for (const entry of [...this.entries.values()]) {
      if (entry.file !== file && entry.tokens.length <= tokens.length && commonPrefixLength(entry.tokens, tokens) === entry.tokens.length) {
        this.remove(entry.file);
      }
    }
    this.evict();
  }

  /** Marks the entry as just used (eviction goes least recently used first). */
  touch(entry: StoredPrefix): void {
    entry.lastUsed = Date.now();
    try {
      utimesSync(entry.file, new Date(), new Date());
    } catch {
      // gone meanwhile: it is then only out of the index's date order
    }
  }

  /** Forgets and deletes a stored prefix (e.g. llama.cpp refused its state). */
  discard(file: string, why: string): void {
    this.log(`prompt cache: discarding ${file}: ${why}`);
    this.remove(file);
  }

  /** Forgets a file and deletes it; one that cannot be deleted (a folder of that name, a read-only cache) is logged and left. */
  private remove(file: string): void {
    this.entries.delete(file);
    try {
      rmSync(file, { force: true });
    } catch (err) {
      this.log(`prompt cache: could not delete ${file}: ${(err as Error).message}`);
    }
  }

  private evict(): void {
    let total = [...this.entries.values()].reduce((n, e) => n + e.bytes, 0);
    for (const entry of [...this.entries.values()].sort((a, b) => a.lastUsed - b.lastUsed)) {
      if (total <= this.maxBytes) break;
      this.remove(entry.file);
      total -= entry.bytes;
    }
  }

  private readIndex(file: string): StoredPrefix | undefined {
    try {
      const fd = openSync(file, 'r');
      try {
        const { header, offset } = readHeader(fd);
        const tokens = new Int32Array(header.tokens);
        readFully(fd, Buffer.from(tokens.buffer));
        const { size, mtimeMs } = statSync(file);
        if (size !== offset + tokens.byteLength + header.stateBytes) return undefined;
        return { file, tokens, bytes: size, lastUsed: mtimeMs };
      } finally {
        closeSync(fd);
      }
    } catch {
      return undefined;
    }
  }
}

function readHeader(fd: number): { header: Header; offset: number } {
  const start = Buffer.alloc(MAGIC.length + 4);
  readFully(fd, start);
  if (!start.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error('not a prompt cache file');
  const json = Buffer.alloc(start.readUInt32LE(MAGIC.length));
  if (json.length > 1 << 16) throw new Error('header too long');
  readFully(fd, json);
  const header = JSON.parse(json.toString('utf8')) as Header;
  const valid = Number.isInteger(header.tokens) && header.tokens > 0 && Number.isInteger(header.stateBytes) &&
    header.stateBytes > PREAMBLE + 4 && typeof header.sha256 === 'string';
  if (!valid) throw new Error('bad header');
  return { header, offset: start.length + json.length };
}

/** Reads the next into.length bytes of the file (every read of a prefix file goes front to back). */
function readFully(fd: number, into: Buffer): void {
  for (let done = 0; done < into.length;) {
    const n = readSync(fd, into, done, into.length - done, null);
    if (n === 0) throw new Error('file is truncated');
    done += n;
  }
}

/**
 * Reads and verifies a prefix file of `tokens` tokens; returns its state as llama.cpp reads it. Throws when
 * it fails a check. Any thread may call it: reading and hashing a large state takes a while.
 */
export function readPrefix(file: string, tokens: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const { header } = readHeader(fd);
    if (header.tokens !== tokens) throw new Error('changed since it was indexed');
    const tokenBytes = Buffer.alloc(header.tokens * 4);
    readFully(fd, tokenBytes);
    // Rebuild the state: the preamble, the stream count (one), the stream.
    const streamBytes = header.stateBytes - PREAMBLE;
    const state = Buffer.alloc(PREAMBLE + 4 + streamBytes);
    const preamble = state.subarray(0, PREAMBLE);
    const stream = state.subarray(PREAMBLE + 4, PREAMBLE + 4 + streamBytes);
    readFully(fd, preamble);
    readFully(fd, stream);
    state.writeUInt32LE(1, PREAMBLE);
    const sha256 = createHash('sha256').update(tokenBytes).update(preamble).update(stream).digest('hex');
    if (sha256 !== header.sha256) throw new Error('checksum mismatch');
    return state;
  } finally {
    closeSync(fd);
  }
}
