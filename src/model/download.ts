// Downloads one hub file into place: resumable (HTTP Range from `<dest>.partial`), verified against the
// size and sha256 the hub reports, and renamed to `dest` only once verified, so that a partial or
// corrupt file is never at `dest`.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fetch, type Response } from 'undici';

export interface DownloadOptions {
  url: string;
  dest: string;
  headers?: Record<string, string>;
  /** Bytes on disk so far (resumed bytes included) and the total when known. */
  onProgress?: (done: number, total: number | undefined) => void;
  /** Transfers that fail without adding a byte before giving up; a transfer that adds bytes resets the count. */
  retries?: number;
  retryDelayMs?: number;
}

export interface DownloadResult {
  path: string;
  size: number;
  /** The verified sha256, or undefined when the hub reported none (only the size was checked). */
  sha256?: string;
  /** Bytes taken from an earlier, interrupted download. */
  resumedFrom: number;
}

/** What the hub says the file is. */
interface Expected {
  size?: number;
  sha256?: string;
}

export class DownloadError extends Error {
  override name = 'DownloadError';
}

export const partialPath = (dest: string) => `${dest}.partial`;

const SHA256 = /^[0-9a-f]{64}$/;
const unquote = (etag: string | null) => etag?.replace(/^W\//, '').replace(/"/g, '').toLowerCase();

function expectedOf(res: Response): Expected {
  const linked = unquote(res.headers.get('x-linked-etag'));
  const etag = unquote(res.headers.get('etag'));
  const sha256 = [linked, etag].find((e) => e !== undefined && SHA256.test(e));
  const size = res.headers.get('x-linked-size') ?? (res.status === 200 ? res.headers.get('content-length') : null);
  return { sha256, size: size === null ? undefined : Number(size) };
}

function failure(url: string, res: Response): DownloadError {
  if (res.status === 401 || res.status === 403)
    return new DownloadError(`${url}: access denied (${res.status}); a gated or private repo needs HF_TOKEN`);
  if (res.status === 404) return new DownloadError(`${url}: not found (404)`);
  return new DownloadError(`${url}: ${res.status} ${res.statusText}`);
}

/**
 * Asks for the file's size and sha256 without downloading it. Like huggingface_hub, stops at the
 * first redirect away from the hub: an LFS file's 302 to its CDN carries X-Linked-Etag (the sha256)
 * and X-Linked-Size, which the CDN's own answer would not. Same-host redirects (renamed repos) are
 * followed.
 */
async function probe(url: string, headers: Record<string, string> = {}): Promise<Expected> {
  let current = url;
  for (let hops = 0; hops < 10; hops++) {
    const res = await fetch(current, { method: 'HEAD', redirect: 'manual', headers });
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      const next = new URL(location, current);
      if (res.headers.has('x-linked-etag') || next.origin !== new URL(current).origin) return expectedOf(res);
      current = next.href;
      continue;
    }
    if (!res.ok) throw failure(url, res);
    return expectedOf(res);
  }
  throw new DownloadError(`${url}: too many redirects`);
}

async function fileSize(path: string): Promise<number> {
  return stat(path).then(
    (s) => s.size,
    () => 0,
  );
}

async function hashFile(hash: Hash, path: string): Promise<void> {
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
}

/** Start of a `Content-Range: bytes START-END/TOTAL` header. */
const rangeStart = (res: Response) => Number(/^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1] ?? NaN);

/**
 * One GET from where the partial file ends to the end (or until the connection fails): appends to
 * the partial file and feeds `hash`, which must already cover the partial file's bytes.
 */
async function transfer(opts: DownloadOptions, partial: string, hash: Hash, offset: number, expected: Expected): Promise<void> {
  const headers = { ...opts.headers, ...(offset > 0 && { range: `bytes=${offset}-` }) };
  const res = await fetch(opts.url, { headers, redirect: 'follow' });
  if ((res.status === 200 && offset > 0) || res.status === 416) {
    // The server ignored or refused the range.
    await res.body?.cancel();
    throw new RestartError();
  }
  if (res.status === 206 && rangeStart(res) !== offset) {
    await res.body?.cancel();
    throw new DownloadError(`${opts.url}: asked for bytes from ${offset}, got ${res.headers.get('content-range')}`);
  }
  // A server error may pass (retried like a dropped connection); a client error will not.
  if (res.status >= 500) throw new Error(`${res.status} ${res.statusText}`);
  if (res.status !== 200 && res.status !== 206) throw failure(opts.url, res);
  if (!res.body) throw new DownloadError(`${opts.url}: empty response`);

  // Each chunk is on disk before the next is read, so a transfer that fails leaves everything it
  // received for the next attempt (a write stream would drop its queued writes on error).
  let done = offset;
  const total = expected.size;
  const file = await open(partial, offset > 0 ? 'a' : 'w');
  try {
    for await (const chunk of res.body) {
      await file.write(chunk);
      hash.update(chunk);
      done += chunk.length;
      opts.onProgress?.(done, total);
    }
  } finally {
    await file.close();
  }
  if (total !== undefined && done < total) throw new Error(`the transfer ended after ${done} of ${total} bytes`);
}

/** The partial file cannot be resumed (the server ignored or refused the range): discard it. */
class RestartError extends Error {}

/** fetch's errors say "fetch failed" or "terminated"; the reason is in `cause`. */
export function networkMessage(err: unknown): string {
  const { message, cause } = err as Error;
  return cause instanceof Error ? `${message}: ${cause.message}` : message;
}

export async function download(opts: DownloadOptions): Promise<DownloadResult> {
  const { dest, url } = opts;
  const partial = partialPath(dest);
  const retries = opts.retries ?? 5;
  await mkdir(dirname(dest), { recursive: true });
  const expected = await probe(url, opts.headers).catch((err: unknown) => {
    throw err instanceof DownloadError ? err : new DownloadError(`${url}: ${networkMessage(err)}`);
  });
  const resumedFrom = await fileSize(partial);
  let restarted = false;
  const restart = async (why: string) => {
    await rm(partial, { force: true });
    if (restarted) throw new DownloadError(`${url}: ${why}, even after starting over`);
    restarted = true;
  };

  for (let failures = 0; ; ) {
    const offset = await fileSize(partial);
    if (expected.size !== undefined && offset > expected.size) {
      await restart(`the partial file is larger than the ${expected.size} bytes reported`);
      continue;
    }
    const hash = createHash('sha256');
    if (offset > 0) await hashFile(hash, partial);
    if (expected.size === undefined || offset < expected.size) {
      try {
        await transfer(opts, partial, hash, offset, expected);
      } catch (err) {
        if (err instanceof DownloadError) throw err;
        if (err instanceof RestartError) {
          await restart('the server would not resume the download');
          continue;
        }
        // A dropped connection: resume from what reached the disk.
        failures = (await fileSize(partial)) > offset ? 0 : failures + 1;
        if (failures > retries) throw new DownloadError(`${url}: ${networkMessage(err)} (gave up after ${retries} retries)`);
        await sleep(opts.retryDelayMs ?? 1000);
        continue;
      }
    }
    const size = await fileSize(partial);
    if (expected.size !== undefined && size !== expected.size) {
      await restart(`got ${size} bytes, expected ${expected.size}`);
      continue;
    }
    const sha256 = hash.digest('hex');
    if (expected.sha256 !== undefined && sha256 !== expected.sha256) {
      // A resumed file may have begun as another version of the file: worth one fresh try.
      const why = `sha256 mismatch: expected ${expected.sha256}, got ${sha256}`;
      if (offset > 0 || resumedFrom > 0) {
        await restart(why);
        continue;
      }
      await rm(partial, { force: true });
      throw new DownloadError(`${url}: ${why}; the download was deleted`);
    }
    await rename(partial, dest);
    return { path: dest, size, sha256: expected.sha256, resumedFrom };
  }
}
