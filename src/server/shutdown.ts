// Graceful shutdown. Closing the server stops accepting connections (requests on open ones get a 503)
// while running generations go on; after the grace period they are cancelled, and each is answered with
// overloaded_error (a 529, or an `error` event mid-stream) so that its client retries rather than take the
// cut answer for a whole one. Then the model is freed.
import type { FastifyInstance } from 'fastify';
import { ApiError } from '../api/errors.js';
import type { PreparePool } from '../chat/prepare-pool.js';
import type { ServerState } from './app.js';

/** After cancelling, how long streams get to write their last events before connections are cut. */
const CANCEL_DRAIN_MS = 5000;

const cancellers = new WeakMap<FastifyInstance, AbortController>();

/**
 * Makes `app.close()` graceful; returns the signal that cancels `app`'s running generations: aborted
 * `graceSeconds` after the close begins, or at once by {@link cancelGenerations}. Requests that arrive
 * while closing get a 503 in the API's shape. Call once, while building the server.
 */
export function registerGracefulClose(app: FastifyInstance, graceSeconds: number): AbortSignal {
  const stop = new AbortController();
  cancellers.set(app, stop);
  let closing = false;
  let timer: NodeJS.Timeout | undefined;
  app.addHook('onRequest', async (_request, reply) => {
    if (!closing) return;
    reply.header('connection', 'close');
    throw new ApiError(503, 'api_error', 'the server is shutting down');
  });
  app.addHook('preClose', async () => {
    closing = true;
    timer = setTimeout(() => cancelGenerations(app, 'grace period over'), graceSeconds * 1000);
  });
  app.addHook('onClose', async () => clearTimeout(timer));
  return stop.signal;
}

/** Cancels every running generation of `app` now. */
export function cancelGenerations(app: FastifyInstance, why: string): void {
  const stop = cancellers.get(app);
  if (!stop || stop.signal.aborted) return;
  app.log.info({ why }, 'cancelling running generations');
  stop.abort();
}

/** Closes the server, waits for its requests (cancelled past the grace period), frees the engine and the pool. */
export async function shutdown(app: FastifyInstance, state: ServerState, pool: PreparePool, graceSeconds: number): Promise<void> {
  // A client that stops reading would hold its stream open forever: cut what is left after the drain.
  const cut = setTimeout(() => app.server.closeAllConnections(), graceSeconds * 1000 + CANCEL_DRAIN_MS).unref();
  await app.close();
  clearTimeout(cut);
  await state.engine?.close();
  await pool.close();
}

/**
 * On the first SIGINT or SIGTERM, shuts down and exits 0 (1 if shutting down failed); a second signal
 * cancels running generations at once instead of waiting out the grace period.
 */
export function exitOnSignals(app: FastifyInstance, state: ServerState, pool: PreparePool, graceSeconds: number): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) return cancelGenerations(app, `second ${signal}`);
    stopping = true;
    app.log.info({ signal, graceSeconds }, 'shutting down');
    shutdown(app, state, pool, graceSeconds).then(
      () => {
        app.log.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        app.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}
