// Images on a model that cannot see them (issue 17): each is checked (base64, size, media type against its
// bytes) and replaced by a short note, or refused with api.images = "reject"; URL sources are refused unless
// api.fetch_image_urls is on, and then never reach a non-public address. On the generated tiny model.
import http from 'node:http';
import t, { type Test } from 'tap';
import { decodeImage, imageNote, pixelSize, sniffMediaType, type ImageMediaType } from '../src/api/images.js';
import { fetchImage, isPublicAddress } from '../src/api/image-urls.js';
import type { ImageBlockParam } from '../src/api/schemas.js';
import { startTestServer, TEST_KEY, type TestServer } from './helpers/server.js';
import { tinyModelPath } from './helpers/models.js';
import { postMessage, readJson, send } from './helpers/http.js';
import { gifHeader, imageBlock, jpegHeader, pngImage, readToolConversation, webpHeader } from './helpers/images.js';

const png = pngImage(40, 30);
const block = (bytes: Buffer, mediaType = 'image/png') => imageBlock(bytes, mediaType) as ImageBlockParam;

t.test('media types are read from the magic numbers, pixel sizes from the headers', async (t) => {
  const cases: Array<[Buffer, ImageMediaType, number, number]> = [
    [png, 'image/png', 40, 30], [jpegHeader(640, 480), 'image/jpeg', 640, 480], [gifHeader(7, 9), 'image/gif', 7, 9], [webpHeader(300, 200), 'image/webp', 300, 200],
  ];
  for (const [bytes, type, width, height] of cases) {
    t.equal(sniffMediaType(bytes), type);
    t.same(pixelSize(type, bytes), { width, height }, type);
  }
  t.same(pixelSize('image/jpeg', jpegHeader(640, 480).subarray(0, 12)), {}, 'a truncated header gives no size');
  const image = decodeImage(block(png), 'messages.0.content.0', 1000);
  t.equal(imageNote(image), `[image: image/png, ${png.length} bytes, 40x30 pixels; this model cannot see images, so only this note stands in for it]`);
});

t.test('bad images are refused with a message that says what is wrong', async (t) => {
  const where = 'messages.0.content.0';
  const refused = (b: ImageBlockParam, message: RegExp, maxBytes = 1 << 20) => t.throws(() => decodeImage(b, where, maxBytes), { status: 400, message });
  refused({ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'not base64!' } }, /^messages\.0\.content\.0\.source\.data: not valid base64$/);
  refused(block(Buffer.alloc(0)), /: the image is empty \(0 bytes\)$/);
  refused(block(png, 'image/jpeg'), /\.source\.media_type: says image\/jpeg, but the data is image\/png$/);
  refused(block(Buffer.from('hello, world')), /\.source\.data: not a JPEG, PNG, GIF or WebP image$/);
  refused(block(png, 'image/bmp'), /\.source\.media_type: 'image\/bmp' is not supported/);
  refused(block(png), /the image is \d+ bytes, over the limit of 100 bytes \(api\.max_image_mb\)$/, 100);
  refused({ type: 'image', source: { type: 'url', url: 'https://example.com/a.png' } }, /\.source: image URLs are not fetched by this server \(api\.fetch_image_urls is off\)/);
  refused({ type: 'image', source: { type: 'file', file_id: 'file_1' } }, /\.source: file sources need Anthropic's Files API/);
});

t.test('only public addresses are fetched from', async (t) => {
  for (const address of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:10.0.0.1'])
    t.notOk(isPublicAddress(address), address);
  for (const address of ['1.1.1.1', '8.8.8.8', '2606:4700:4700::1111', '::ffff:8.8.8.8']) t.ok(isPublicAddress(address), address);
  // A loopback server the fetch must not reach, by address and by a name that resolves to it.
  const local = http.createServer((_, res) => res.end(png));
  await new Promise<void>((resolve) => local.listen(0, '127.0.0.1', resolve));
  t.teardown(() => local.close());
  const port = (local.address() as { port: number }).port;
  await t.rejects(fetchImage(`http://127.0.0.1:${port}/a.png`, 'x', 1 << 20), { status: 400, message: /^x\.source\.url: 127\.0\.0\.1 is not a public address/ });
  await t.rejects(fetchImage(`http://[::1]:${port}/a.png`, 'x', 1 << 20), { status: 400, message: /::1 is not a public address/ });
  await t.rejects(fetchImage(`http://localhost:${port}/a.png`, 'x', 1 << 20), { status: 400, message: /^x\.source\.url: the image could not be fetched: localhost resolves to no public address/ });
  await t.rejects(fetchImage('file:///etc/passwd', 'x', 1 << 20), { status: 400, message: /only http and https URLs are fetched/ });
});

const request = (content: unknown[], extra: Record<string, unknown> = {}) => ({ model: 'claude-test', max_tokens: 8, temperature: 0, messages: [{ role: 'user', content }], ...extra });

async function countTokens(server: TestServer, body: Record<string, unknown>): Promise<number> {
  const response = await send(`${server.url}/v1/messages/count_tokens`, { method: 'POST', headers: { 'x-api-key': TEST_KEY }, body });
  t.equal(response.statusCode, 200);
  return (await readJson(response)).input_tokens as number;
}

async function refusedByServer(t: Test, server: TestServer, body: Record<string, unknown>, message: RegExp): Promise<void> {
  const response = await postMessage(server.url, body);
  t.equal(response.statusCode, 400);
  t.match(await readJson(response), { type: 'error', error: { type: 'invalid_request_error', message } });
}

t.test('a text-only model answers with a note in place of each image', async (t) => {
  const server = await startTestServer(await tinyModelPath(), { slots: 1 }, 5, { api: { max_image_mb: 1 } });
  t.teardown(() => server.close());
  const note = imageNote(decodeImage(block(png), 'x', 1 << 20));
  const withImage = request([{ type: 'text', text: 'Look:' }, imageBlock(png)]);
  const withNote = request([{ type: 'text', text: 'Look:' }, { type: 'text', text: note }]);
  t.equal(await countTokens(server, withImage), await countTokens(server, withNote), 'count_tokens counts the note');
  const answered = await postMessage(server.url, withImage);
  t.equal(answered.statusCode, 200);
  const body = await readJson(answered);
  t.equal((body.usage as { input_tokens: number }).input_tokens, await countTokens(server, withNote), 'the prompt holds the note');

  const read = await postMessage(server.url, readToolConversation(png));
  t.equal(read.statusCode, 200, "Claude Code's Read tool result holding a PNG is served");
  t.match(await readJson(read), { type: 'message', role: 'assistant' });

  await refusedByServer(t, server, request([imageBlock(Buffer.from('not an image at all'))]), /^messages\.0\.content\.0\.source\.data: not a JPEG, PNG, GIF or WebP image$/);
  await refusedByServer(t, server, request([imageBlock(png, 'image/gif')]), /^messages\.0\.content\.0\.source\.media_type: says image\/gif, but the data is image\/png$/);
  await refusedByServer(t, server, request([{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: '@@@@' } }]), /source\.data: not valid base64$/);
  await refusedByServer(t, server, request([imageBlock(Buffer.alloc(0))]), /the image is empty \(0 bytes\)$/);
  await refusedByServer(t, server, request([imageBlock(Buffer.concat([png, Buffer.alloc(1 << 20)]))]), /over the limit of 1048576 bytes \(api\.max_image_mb\)$/);
  await refusedByServer(t, server, request([{ type: 'image', source: { type: 'url', url: 'http://127.0.0.1/a.png' } }]), /api\.fetch_image_urls is off/);
});

t.test('api.images = "reject" refuses images on a text-only model; fetching URLs reaches no loopback address', async (t) => {
  const server = await startTestServer(await tinyModelPath(), { slots: 1 }, 5, { api: { images: 'reject', fetch_image_urls: true } });
  t.teardown(() => server.close());
  await refusedByServer(t, server, request([imageBlock(png)]), /^messages\.0\.content\.0: this model cannot see images \(api\.images = "reject"\)$/);
  await refusedByServer(t, server, readToolConversation(png), /^messages\.2\.content\.0\.content\.0: this model cannot see images/);
  await refusedByServer(t, server, request([{ type: 'image', source: { type: 'url', url: 'http://localhost:9/a.png' } }]),
    /^messages\.0\.content\.0\.source\.url: the image could not be fetched: localhost resolves to no public address/);
});
