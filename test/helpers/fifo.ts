// FIFOs standing in for prompt-cache files in tests: a save or a load through one blocks until the test
// reads or feeds it, so the test controls when the file thread's job ends.
import { closeSync, constants, openSync, readSync, writeSync } from 'node:fs';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Reads a FIFO without blocking until its writer has written and closed it (or the deadline passes). */
export async function drainFifo(path: string, deadlineMs: number): Promise<Buffer> {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const chunks: Buffer[] = [];
  try {
    for (const end = Date.now() + deadlineMs; Date.now() < end;) {
      const chunk = Buffer.alloc(1 << 20);
      let n: number;
      try {
        n = readSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
        n = -1; // the writer is there but has not written more yet
      }
      if (n > 0) chunks.push(chunk.subarray(0, n));
      else if (n === 0 && chunks.length > 0) break; // written and closed
      else await sleep(10);
    }
  } finally {
    closeSync(fd);
  }
  return Buffer.concat(chunks);
}

/** Writes `bytes` into a FIFO once its reader has opened it, without blocking (or gives up at the deadline). */
export async function fillFifo(path: string, bytes: Buffer, deadlineMs: number): Promise<void> {
  const end = Date.now() + deadlineMs;
  let fd = -1;
  while (fd < 0 && Date.now() < end) {
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw err; // no reader yet
      await sleep(10);
    }
  }
  try {
    for (let done = 0; done < bytes.length && Date.now() < end;) {
      try {
        done += writeSync(fd, bytes, done);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err; // the pipe is full
        await sleep(5);
      }
    }
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
