// A local HTTP server that serves files the way Hugging Face does: /<repo>/resolve/main/<file> answers
// 302 with X-Linked-Etag (sha256) and X-Linked-Size, and the redirect target serves the bytes, with
// Range support. Faults can be switched on to test the downloader.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HubFaults {
  /** Each transfer takes the next entry: close the connection after that many body bytes (a FIN, not a
   * reset, which could discard bytes the client has not read yet). */
  cuts?: number[];
  /** Answer this many transfers with 503 first. */
  unavailable?: number;
  /** Serve bytes that differ from the ones the sha256 header describes. */
  corrupt?: boolean;
  /** Answer ranged requests with the whole file (200). */
  ignoreRange?: boolean;
  /** Serve the file directly (no redirect) with a git-style ETag and no sha256, as for non-LFS files. */
  noSha?: boolean;
}

export interface RequestLog {
  method: string;
  url: string;
  range?: string;
}

export interface FakeHub {
  endpoint: string;
  files: Map<string, Buffer>;
  faults: HubFaults;
  requests: RequestLog[];
  close(): Promise<void>;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** `files` maps `owner/repo/file` to contents. */
export async function startFakeHub(files: Record<string, Buffer>): Promise<FakeHub> {
  const hub: FakeHub = { endpoint: '', files: new Map(Object.entries(files)), faults: {}, requests: [], close: async () => {} };

  const serveBytes = (req: IncomingMessage, res: ServerResponse, data: Buffer, headers: Record<string, string>) => {
    const { faults } = hub;
    if (req.method === 'GET' && faults.unavailable) {
      faults.unavailable--;
      return void res.writeHead(503).end('busy');
    }
    const body = faults.corrupt ? Buffer.from(data.map((b, i) => (i === data.length >> 1 ? b ^ 0xff : b))) : data;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    let start = 0;
    if (range && !faults.ignoreRange) {
      start = Number(range[1]);
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, { ...headers, 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
    } else res.writeHead(200, { ...headers, 'content-length': body.length, 'accept-ranges': 'bytes' });
    if (req.method === 'HEAD') return void res.end();
    const rest = body.subarray(start);
    const cut = faults.cuts?.shift();
    // The cut comes a moment after the bytes: a fetch body that errors drops the chunks it has not handed out yet.
    if (cut !== undefined) return void res.write(rest.subarray(0, cut), () => setTimeout(() => res.socket?.end(), cut > 0 ? 200 : 0));
    res.end(rest);
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://hub');
    hub.requests.push({ method: req.method!, url: url.pathname, range: req.headers.range });
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/main\/(.+)$/.exec(url.pathname);
    const api = /^\/api\/models\/([^/]+\/[^/]+)$/.exec(url.pathname);
    const cdn = /^\/cdn\/(.+)$/.exec(url.pathname);
    if (resolve) {
      const name = `${resolve[1]}/${decodeURIComponent(resolve[2]!)}`;
      const data = hub.files.get(name);
      if (!data) return void res.writeHead(404).end('Entry not found');
      if (hub.faults.noSha) return serveBytes(req, res, data, { etag: `"${createHash('sha1').update(data).digest('hex')}"` });
      res.writeHead(302, {
        location: `/cdn/${encodeURIComponent(name)}`,
        'x-linked-etag': `"${sha256(data)}"`,
        'x-linked-size': String(data.length),
        etag: '"0123456789abcdef0123456789abcdef01234567"',
      });
      return void res.end();
    }
    if (cdn) {
      const data = hub.files.get(decodeURIComponent(cdn[1]!));
      if (!data) return void res.writeHead(404).end();
      return serveBytes(req, res, data, { etag: '"cdn-etag"' });
    }
    if (api) {
      const siblings = [...hub.files.keys()].filter((k) => k.startsWith(`${api[1]}/`)).map((k) => ({ rfilename: k.slice(api[1]!.length + 1) }));
      if (siblings.length === 0) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end(JSON.stringify({ id: api[1], siblings: [{ rfilename: 'README.md' }, ...siblings] }));
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  hub.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  hub.close = () => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  };
  return hub;
}
