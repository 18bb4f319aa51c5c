// Starting a worker thread on one of the project's modules.
import { Worker, type WorkerOptions } from 'node:worker_threads';

/**
 * Starts a worker thread on the module at `path` (relative to `callerUrl`, without extension): the
 * compiled .js file, or, when the caller runs from source through tsx (tests), the .ts file with tsx
 * registered inside the new thread.
 */
export function startWorker(path: string, callerUrl: string, options: WorkerOptions): Worker {
  if (!callerUrl.endsWith('.ts')) return new Worker(new URL(`${path}.js`, callerUrl), options);
  const entry = new URL(`${path}.ts`, callerUrl).href;
  const bootstrap = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(bootstrap, { ...options, eval: true });
}
