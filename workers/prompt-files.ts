// The prompt cache's file thread (src/engine/prompt-files.ts): writes and reads prefix files for the engine.
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { readPrefix, writePrefix } from '../src/engine/prompt-store.js';
import type { FileJob, FileResult, PromptFilesData } from '../src/engine/prompt-files.js';

const { dir, doorbell: doorbellBuffer, results } = workerData as PromptFilesData;
const doorbell = new Int32Array(doorbellBuffer);

function run(job: FileJob): { result: FileResult; transfer: ArrayBuffer[] } {
  try {
    if (job.kind === 'save') {
      const state = Buffer.from(job.state.buffer, job.state.byteOffset, job.state.byteLength);
      return { result: { kind: 'save', tokens: job.tokens, ...writePrefix(dir, job.tokens, state) }, transfer: [] };
    }
    const state = readPrefix(job.file, job.tokens);
    return { result: { kind: 'load', id: job.id, file: job.file, state }, transfer: [state.buffer as ArrayBuffer] };
  } catch (err) {
    const error = (err as Error).message;
    return { result: job.kind === 'load' ? { kind: 'load', id: job.id, file: job.file, error } : { kind: 'save', error }, transfer: [] };
  }
}

/** Jobs received but not run yet. */
const queue: FileJob[] = [];

/**
 * Runs every job received, loads first: a request waits in its slot for each load, while a save only holds
 * a copy of a state. Saves keep their order (the engine counts their memory in that order).
 */
function runAll(): void {
  for (;;) {
    for (let m = receiveMessageOnPort(parentPort!); m; m = receiveMessageOnPort(parentPort!)) queue.push(m.message as FileJob);
    const load = queue.findIndex((job) => job.kind === 'load');
    const [job] = queue.splice(load >= 0 ? load : 0, 1);
    if (!job) return;
    const { result, transfer } = run(job);
    results.postMessage(result, transfer);
    Atomics.add(doorbell, 0, 1);
    Atomics.notify(doorbell, 0);
  }
}

parentPort!.on('message', (job: FileJob) => {
  queue.push(job);
  runAll();
});
