// Images on a vision model (issue 17): the generated tiny model with a random LLaVA-style projector
// (test/helpers/vision.ts). An image is 64 tokens in the prompt, computed through the same engine (batched,
// chunked, cached by the image's content), counted by count_tokens, in user messages and tool results.
import t from 'tap';
import { statSync } from 'node:fs';
import { loadAddon } from '../src/native.js';
import { loadConfig } from '../src/config.js';
import { preflight } from '../src/model/preflight.js';
import { VisionRenderer } from '../src/chat/vision-renderer.js';
import { toChatRequest } from '../src/api/convert.js';
import type { CountTokensRequest } from '../src/api/schemas.js';
import { startTestServer, TEST_KEY, type TestServer } from './helpers/server.js';
import { tinyVisionModel } from './helpers/vision.js';
import { postMessage, readJson, send, sseEvents } from './helpers/http.js';
import { imageBlock, pngImage, readToolConversation } from './helpers/images.js';

const IMAGE_TOKENS = 64;
const { model, mmproj } = await tinyVisionModel();

t.test('the projector makes an image 64 tokens, and encodes it', async (t) => {
  const addon = loadAddon();
  const vocab = new addon.Model(model, { vocabOnly: true });
  const weights = new addon.Model(model);
  const context = new addon.Context(weights, { contextSize: 512, batchSize: 128, ubatchSize: 128, sequences: 1, threads: 2 });
  const vision = new addon.Vision(mmproj, model, { threads: 2, batchSize: 128 });
  t.teardown(() => {
    context.free();
    weights.free();
    vocab.free();
  });
  t.same(vision.info(), { embeddingSize: 64, nonCausal: false });
  const parts = vision.tokenize(pngImage(640, 480), 'a'.repeat(64));
  t.same(parts, [{ chunk: 'a'.repeat(64), tokens: IMAGE_TOKENS }], 'one image chunk, no marker text (LLaVA has none)');
  const ids = ['a'.repeat(64)];
  const at = (values: number[]) => Int32Array.from(values);
  t.equal(vision.decode(context, ids, at([0]), at([40]), at([0]), at([0])), 0, 'the first 40 image tokens');
  t.equal(vision.decode(context, ids, at([40]), at([24]), at([40]), at([0])), 0, 'the rest, from the kept embeddings');
  t.equal(context.seqPosMax(0), IMAGE_TOKENS - 1);
  const { encoded, encodeMs } = vision.stats();
  t.equal(encoded, 1, 'encoded once for both decodes');
  t.comment(`tiny projector: one 32x32 image (64 tokens) encoded in ${encodeMs.toFixed(1)} ms`);
  t.equal(vision.decode(context, ['b'.repeat(64)], at([0]), at([1]), at([64]), at([0])), -100, 'an image never tokenized is not kept');
  // The projector keeps the resized pixels of the last 8 images only: an older one's are made again from its file.
  for (let seed = 2; seed < 12; seed++) vision.tokenize(pngImage(32, 32, seed), `${seed}`.padStart(64, 'f'));
  const fresh = new addon.Vision(mmproj, model, { threads: 2, batchSize: 128 }); // no embeddings kept yet
  t.equal(fresh.decode(context, ids, at([0]), at([8]), at([64]), at([0])), 0, 'an image tokenized 10 images ago is encoded from its file');
  t.equal(fresh.stats().encoded, 1);
  t.throws(() => vision.tokenize(Buffer.from('not an image'), 'c'.repeat(64)), { code: 'ERR_IMAGE' });
});

t.test('the memory plan counts the projector with the weights', async (t) => {
  const { config } = loadConfig({ env: {} });
  const alone = await preflight(model, config);
  const seeing = await preflight(model, config, undefined, mmproj);
  t.equal(seeing.facts.fileBytes - alone.facts.fileBytes, statSync(mmproj).size);
  await t.rejects(preflight(model, config, undefined, '/nonexistent/mmproj.gguf'), { message: 'projector file not found: /nonexistent/mmproj.gguf (model.mmproj)' });
});

const system = `You are a careful assistant. ${'Describe what you are shown in plain words, and say what you are unsure of. '.repeat(16)}`;
const ask = (image: Buffer, extra: Record<string, unknown> = {}) => ({
  model: 'claude-test', max_tokens: 6, temperature: 0, system,
  messages: [{ role: 'user', content: [{ type: 'text', text: 'What is in this picture?' }, imageBlock(image)] }],
  ...extra,
});
const withoutImage = (extra: Record<string, unknown> = {}) => ({
  model: 'claude-test', max_tokens: 6, temperature: 0, system,
  messages: [{ role: 'user', content: [{ type: 'text', text: 'What is in this picture?' }, { type: 'text', text: '' }] }],
  ...extra,
});

async function countTokens(server: TestServer, body: Record<string, unknown>): Promise<number> {
  const response = await send(`${server.url}/v1/messages/count_tokens`, { method: 'POST', headers: { 'x-api-key': TEST_KEY }, body });
  t.equal(response.statusCode, 200);
  return (await readJson(response)).input_tokens as number;
}

interface Answer {
  text: string;
  usage: { input_tokens: number; cache_read_input_tokens: number };
}

async function answer(server: TestServer, body: Record<string, unknown>): Promise<Answer> {
  const response = await postMessage(server.url, body);
  const json = await readJson(response);
  t.equal(response.statusCode, 200, JSON.stringify(json));
  const text = (json.content as Array<{ type: string; text?: string }>).map((b) => b.text ?? '').join('');
  return { text, usage: json.usage as Answer['usage'] };
}

t.test('through /v1/messages', async (t) => {
  const server = await startTestServer(model, { slots: 2 }, 5, { mmproj });
  t.teardown(() => server.close());
  const picture = pngImage(64, 48, 1);
  const other = pngImage(64, 48, 2);

  await t.test('the prompt grows by the image tokens, counted by count_tokens', async (t) => {
    const plain = await countTokens(server, withoutImage());
    const counted = await countTokens(server, ask(picture));
    t.equal(counted, plain + IMAGE_TOKENS);
    const cold = await answer(server, ask(picture));
    t.equal(cold.usage.input_tokens + cold.usage.cache_read_input_tokens, counted, 'the prompt served is the one counted');
  });

  await t.test('the same image again hits the cache, with the same answer; a different one misses from the image on', async (t) => {
    const first = await answer(server, ask(picture, { max_tokens: 12 }));
    const again = await answer(server, ask(picture, { max_tokens: 12 }));
    const prompt = again.usage.input_tokens + again.usage.cache_read_input_tokens;
    t.equal(again.usage.cache_read_input_tokens, prompt - 1, 'all but the last prompt token from the cache');
    t.equal(again.text, first.text, 'the cached image gives the answer its computed one gave');
    const changed = await answer(server, ask(other, { max_tokens: 12 }));
    t.ok(changed.usage.cache_read_input_tokens > 256, 'the system prompt before the image is reused');
    t.ok(changed.usage.cache_read_input_tokens <= prompt - IMAGE_TOKENS - 1, 'nothing from the image on');
  });

  await t.test('streaming works', async (t) => {
    const response = await postMessage(server.url, ask(picture, { stream: true }));
    t.equal(response.statusCode, 200);
    const events: string[] = [];
    let input = 0;
    for await (const event of sseEvents(response)) {
      events.push(event.event);
      if (event.event === 'message_start') {
        const usage = (event.data.message as { usage: { input_tokens: number; cache_read_input_tokens: number } }).usage;
        input = usage.input_tokens + usage.cache_read_input_tokens;
      }
    }
    t.equal(events[0], 'message_start');
    t.equal(events.at(-1), 'message_stop');
    t.equal(input, await countTokens(server, ask(picture)));
  });

  await t.test('requests with images are served side by side', async (t) => {
    const answers = await Promise.all([1, 2, 3, 4].map((seed) => answer(server, ask(pngImage(40, 40, 10 + seed), { max_tokens: 8 }))));
    for (const a of answers) t.equal(a.usage.input_tokens + a.usage.cache_read_input_tokens, await countTokens(server, ask(picture)));
  });

  await t.test("Claude Code's Read tool result holding a PNG is seen", async (t) => {
    const body = readToolConversation(picture);
    const counted = await countTokens(server, body);
    const served = await answer(server, body);
    t.equal(served.usage.input_tokens + served.usage.cache_read_input_tokens, counted);
    const noted = await countTokens(server, { ...body, messages: [...(body.messages as unknown[]).slice(0, 2), { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_01', content: [] }] }] });
    // The text on each side of the image is tokenized apart: a newline pair may become two tokens instead of one.
    t.ok(counted >= noted + IMAGE_TOKENS && counted <= noted + IMAGE_TOKENS + 2, `the image is in the tool result as its tokens (${counted} vs ${noted})`);
  });

  await t.test('bad images are a 400', async (t) => {
    const truncated = pngImage(64, 48).subarray(0, 60);
    const response = await postMessage(server.url, ask(truncated));
    t.equal(response.statusCode, 400);
    t.match(await readJson(response), { type: 'error', error: { type: 'invalid_request_error', message: /^messages\.0\.content\.1: the image could not be decoded for the model$/ } });
    const mismatch = await postMessage(server.url, ask(picture, { messages: [{ role: 'user', content: [imageBlock(picture, 'image/jpeg')] }] }));
    t.equal(mismatch.statusCode, 400);
    t.match(await readJson(mismatch), { error: { message: /says image\/jpeg, but the data is image\/png$/ } });
  });
});

t.test('a Gemma 3-style projector: its image tokens attend both ways, so each image is computed whole, in one step', async (t) => {
  const gemma = await tinyVisionModel('gemma3');
  const vision = new (loadAddon().Vision)(gemma.mmproj, gemma.model, { threads: 2 });
  t.same(vision.info(), { embeddingSize: 64, nonCausal: true });
  const parts = vision.tokenize(pngImage(64, 64, 7), '7'.repeat(64));
  t.match(parts, [{ text: Int32Array }, { chunk: '7'.repeat(64), tokens: 16 }, { text: Int32Array }], "<start_of_image>, 16 image tokens, <end_of_image>");
  // An image larger than a step holds is refused when the request is prepared.
  const vocab = new (loadAddon().Model)(gemma.model, { vocabOnly: true });
  t.teardown(() => vocab.free());
  const renderer = new VisionRenderer(vocab, vision, 8);
  const marked = renderer.imageHandler(1 << 20);
  t.throws(() => renderer.prepareWithImages(toChatRequest(ask(pngImage(48, 48, 1)) as CountTokensRequest, marked.handler), marked.images),
    { status: 400, message: /^messages\.0\.content\.1: the image is 16 tokens, and this model computes an image in one step, which holds 8 \(engine\.step_token_budget, engine\.ubatch_size\)$/ });
  // A step budget smaller than the prompt: chunks of text around whole images.
  const server = await startTestServer(gemma.model, { slots: 2, step_token_budget: 24, batch_size: 64, ubatch_size: 64 }, 5, { mmproj: gemma.mmproj });
  t.teardown(() => server.close());
  const cold = await answer(server, ask(pngImage(48, 48, 1), { max_tokens: 12 }));
  t.equal(cold.usage.input_tokens + cold.usage.cache_read_input_tokens, await countTokens(server, ask(pngImage(48, 48, 1))));
  const cached = await answer(server, ask(pngImage(48, 48, 1), { max_tokens: 12 }));
  t.equal(cached.usage.input_tokens, 1, 'served from the cache');
  t.equal(cached.text, cold.text, 'the same answer');
  const both = await Promise.all([2, 3].map((seed) => answer(server, ask(pngImage(48, 48, seed), { max_tokens: 8 }))));
  for (const a of both) t.ok(a.usage.input_tokens > 16, 'a different image is computed');
});
