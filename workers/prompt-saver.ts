// The prompt saver thread (src/engine/prompt-saver.ts): writes the states the engine hands over.
import { parentPort, workerData } from 'node:worker_threads';
import { writePrefix } from '../src/engine/prompt-store.js';
import type { PromptSaverData, SaveJob, SaveResult } from '../src/engine/prompt-saver.js';

const { dir, doorbell: doorbellBuffer, results } = workerData as PromptSaverData;
const doorbell = new Int32Array(doorbellBuffer);

parentPort!.on('message', (job: SaveJob) => {
  let result: SaveResult;
  try {
    const state = Buffer.from(job.state.buffer, job.state.byteOffset, job.state.byteLength);
    result = { tokens: job.tokens, ...writePrefix(dir, job.tokens, state, job.slot, job.slots) };
  } catch (err) {
    result = { tokens: job.tokens, error: (err as Error).message };
  }
  results.postMessage(result);
  Atomics.add(doorbell, 0, 1);
  Atomics.notify(doorbell, 0);
});
