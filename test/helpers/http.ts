// Raw HTTP for tests that need control a client SDK hides: any Host header, disconnecting mid-stream,
// reading server-sent events one by one.
import http, { type IncomingMessage } from 'node:http';
import { TEST_KEY } from './server.js';

export interface SseEvent {
  event: string;
  data: Record<string, unknown>;
}

/** A request to `url` (a fresh connection each time); resolves when the response headers are in. */
export function send(
  url: string,
  { method = 'GET', headers = {}, body }: { method?: string; headers?: Record<string, string>; body?: unknown } = {},
): Promise<IncomingMessage> {
  const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const request = http.request(url, {
      method,
      agent: false,
      headers: { ...(payload !== undefined && { 'content-type': 'application/json' }), ...headers },
    });
    request.on('response', resolve).on('error', reject);
    request.end(payload);
  });
}

export async function readBody(response: IncomingMessage): Promise<string> {
  let text = '';
  for await (const chunk of response) text += String(chunk);
  return text;
}

export async function readJson(response: IncomingMessage): Promise<Record<string, unknown>> {
  return JSON.parse(await readBody(response)) as Record<string, unknown>;
}

/** POST /v1/messages with the test key. */
export function postMessage(url: string, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<IncomingMessage> {
  return send(`${url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': TEST_KEY, ...headers }, body });
}

/** A long streaming request: sampled at temperature 1, so the random-weight model seldom ends it before max_tokens. */
export const longStream = (maxTokens = 4000): Record<string, unknown> => ({
  model: 'claude-test', max_tokens: maxTokens, stream: true, temperature: 1,
  messages: [{ role: 'user', content: 'Tell me a very long story.' }],
});

/** The server-sent events of a response, as they arrive. */
export async function* sseEvents(response: IncomingMessage): AsyncGenerator<SseEvent> {
  let buffer = '';
  for await (const chunk of response) {
    buffer += String(chunk);
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: ?(.*)$/m.exec(block)?.[1] ?? 'message';
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (data) yield { event, data: JSON.parse(data) as Record<string, unknown> };
    }
  }
}

/** Polls until `check` returns true, up to `seconds`; returns its last answer. */
export async function eventually(check: () => Promise<boolean>, seconds = 60): Promise<boolean> {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return check();
}
