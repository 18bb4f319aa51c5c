// Load generator: holds N concurrent streaming sessions against a running Pensieve server for a set
// time, then prints throughput, time to first token and inter-token latency percentiles, errors, and
// the server's RSS over time (from /health).
//
//   npm run bench:load -- --url http://127.0.0.1:7777 --concurrency 8 --duration 30 --max-tokens 256
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:7777' },
    key: { type: 'string', default: process.env.ANTHROPIC_API_KEY ?? 'pensieve-local-key' },
    concurrency: { type: 'string', short: 'c', default: '8' },
    duration: { type: 'string', short: 'd', default: '30' },
    'max-tokens': { type: 'string', default: '256' },
    prompt: { type: 'string', default: 'Write a long story about a lighthouse keeper.' },
    model: { type: 'string', default: 'claude-load-test' },
  },
});
const concurrency = Number(values.concurrency);
const durationS = Number(values.duration);
const maxTokens = Number(values['max-tokens']);
const base = values.url.replace(/\/$/, '');

const dispatcher = new Agent({ connections: concurrency + 1, bodyTimeout: 0, headersTimeout: 0 });
const ttfts: number[] = [];
const itls: number[] = [];
const errors = new Map<string, number>();
const rss: { atS: number; bytes: number }[] = [];
let tokens = 0;
let completed = 0;

const countError = (kind: string): void => void errors.set(kind, (errors.get(kind) ?? 0) + 1);

/** One streaming request; records its latencies as its text arrives. */
async function session(deadline: number): Promise<void> {
  const started = performance.now();
  const response = await request(`${base}/v1/messages`, {
    method: 'POST',
    dispatcher,
    headers: { 'content-type': 'application/json', 'x-api-key': values.key, 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: values.model, max_tokens: maxTokens, stream: true, messages: [{ role: 'user', content: values.prompt }] }),
  });
  if (response.statusCode !== 200) {
    const body = (await response.body.json().catch(() => ({}))) as { error?: { type?: string } };
    countError(`${response.statusCode} ${body.error?.type ?? ''}`.trim());
    if (response.statusCode === 529 || response.statusCode === 429) await new Promise((r) => setTimeout(r, 1000)); // as retry-after says
    return;
  }
  let last: number | undefined;
  let buffer = '';
  for await (const chunk of response.body) {
    buffer += String(chunk);
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (block.startsWith('event: error')) countError(`stream error ${/"type":"(\w+_error)"/.exec(block)?.[1] ?? ''}`.trim());
      if (!block.startsWith('event: content_block_delta')) continue;
      const now = performance.now();
      if (last === undefined) ttfts.push(now - started);
      else itls.push(now - last);
      last = now;
      tokens++; // one delta per generated token, near enough (a token may complete no character)
    }
    if (performance.now() > deadline) {
      response.body.destroy(); // the run is over: drop the stream, which cancels the generation
      return;
    }
  }
  completed++;
}

async function client(deadline: number): Promise<void> {
  while (performance.now() < deadline) {
    try {
      await session(deadline);
    } catch (err) {
      countError((err as { code?: string }).code ?? (err as Error).message);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

async function sampleRss(startedAt: number): Promise<void> {
  try {
    const { body } = await request(`${base}/health`, { dispatcher });
    const health = (await body.json()) as { rssBytes?: number };
    if (health.rssBytes !== undefined) rss.push({ atS: (performance.now() - startedAt) / 1000, bytes: health.rssBytes });
  } catch {
    countError('health unreachable');
  }
}

function percentiles(name: string, ms: number[]): string {
  if (ms.length === 0) return `${name}: no samples`;
  const sorted = [...ms].sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!.toFixed(1);
  return `${name} ms: p50 ${at(50)}  p90 ${at(90)}  p99 ${at(99)}  max ${sorted.at(-1)!.toFixed(1)}  (n=${ms.length})`;
}

const startedAt = performance.now();
const deadline = startedAt + durationS * 1000;
console.log(`${concurrency} concurrent streams against ${base} for ${durationS} s, max_tokens ${maxTokens}`);
await sampleRss(startedAt);
const sampler = setInterval(() => void sampleRss(startedAt), Math.max(1000, (durationS * 1000) / 10));
await Promise.all(Array.from({ length: concurrency }, () => client(deadline)));
clearInterval(sampler);
await sampleRss(startedAt);
await dispatcher.close();

const elapsedS = (performance.now() - startedAt) / 1000;
console.log(`throughput: ${(tokens / elapsedS).toFixed(1)} tokens/s (${tokens} tokens, ${completed} streams completed, in ${elapsedS.toFixed(1)} s)`);
console.log(percentiles('time to first token', ttfts));
console.log(percentiles('inter-token latency', itls));
console.log(errors.size === 0 ? 'errors: none' : `errors: ${[...errors].map(([kind, n]) => `${kind} x${n}`).join(', ')}`);
console.log(`server RSS (MiB) over time: ${rss.map((s) => `${s.atS.toFixed(0)}s ${(s.bytes / 2 ** 20).toFixed(0)}`).join('  ')}`);
