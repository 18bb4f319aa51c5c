// Reads a server's GET /health, telling "nothing there" apart from "loading" and "ready".
import { fetch } from 'undici';

const TIMEOUT_MS = 3000;

export type Health =
  | { kind: 'down'; reason: string }
  | { kind: 'ready' | 'not-ready'; status: number; body: Record<string, unknown> }
  /** Something answers that is not a Pensieve server. */
  | { kind: 'foreign'; status: number };

export async function readHealth(url: string): Promise<Health> {
  let res;
  try {
    res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (err) {
    const cause = (err as Error).cause as NodeJS.ErrnoException | undefined;
    return { kind: 'down', reason: cause?.code ?? (err as Error).message };
  }
  const body = await res.json().catch(() => undefined);
  if (typeof body !== 'object' || body === null || typeof (body as { status?: unknown }).status !== 'string')
    return { kind: 'foreign', status: res.status };
  return { kind: res.ok && (body as { status: string }).status === 'ok' ? 'ready' : 'not-ready', status: res.status, body: body as Record<string, unknown> };
}
