// The dashboard in a real browser: Debian's chromium, driven headless by puppeteer-core, against a real
// server and engine on the tiny model. Requests (streamed and not, one refused, one whose client leaves)
// must show up live and then as rows; the key is asked for when the server wants one; prompt text shows
// only with log.prompts. Screenshots go to the test's folder, and to PENSIEVE_SCREENSHOT when it is set
// (that is how docs/dashboard.png is made). Without a browser the test is skipped, saying so.
import t from 'tap';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Browser, Page } from 'puppeteer-core';
import { startTestServer, TEST_KEY, type TestServer } from './helpers/server.js';
import { tinyModelPath } from './helpers/models.js';
import { eventually, longStream, postMessage, readJson, send, sseEvents } from './helpers/http.js';

// The page's globals, inside page.evaluate() callbacks (this project compiles without the DOM's types).
declare const document: any, window: any, sessionStorage: any, getComputedStyle: any;

const CHROMIUM = process.env.PENSIEVE_CHROMIUM ?? '/usr/bin/chromium';
const SECRET = 'zebra-pelican-prompt-text';

async function launch(): Promise<Browser> {
  const { launch } = await import('puppeteer-core');
  return launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
}

/** Opens the dashboard; collects the page's errors (a CSP refusal among them). */
async function open(browser: Browser, url: string, errors: string[]): Promise<Page> {
  const page = await browser.newPage();
  page.on('pageerror', (err) => errors.push(String(err)));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  await page.setViewport({ width: 1280, height: 800 });
  await page.goto(`${url}/`, { waitUntil: 'load' });
  return page;
}

const snapshots = (page: Page): Promise<number> => page.evaluate(() => Number(document.body.dataset.snapshots ?? 0));
const text = (page: Page, selector: string): Promise<string> => page.$eval(selector, (el) => el.textContent ?? '');
const rows = (page: Page, table: string): Promise<string[][]> =>
  page.$$eval(`#${table} tbody tr`, (trs) => trs.map((tr) => [tr.className, ...[...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')]));

function screenshotPath(name: string): string {
  const dir = t.testdirName;
  mkdirSync(dir, { recursive: true });
  return join(dir, name);
}

const message = (content: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  model: 'claude-sonnet-test', max_tokens: 24, messages: [{ role: 'user', content }], ...extra,
});

if (!existsSync(CHROMIUM)) {
  t.plan(0, `no browser at ${CHROMIUM}: install Debian's chromium (apt-get install -y chromium) or set PENSIEVE_CHROMIUM`);
} else {
  const model = await tinyModelPath();
  const browser = await launch();
  t.teardown(() => browser.close());

  t.test('open on loopback: live requests, rows, charts, cache, light and dark, phone width', async (t) => {
    const server: TestServer = await startTestServer(model, {}, 5, { server: { require_key_on_loopback: false } });
    t.teardown(() => server.close());
    const errors: string[] = [];
    const page = await open(browser, server.url, errors);
    t.ok(await eventually(async () => (await snapshots(page)) >= 1, 20), 'a snapshot arrives');
    t.match(await text(page, '#model'), /tiny-qwen2\.gguf/, 'the model file is shown');
    t.match(await text(page, '#model'), /KV type\s*f16/, 'the KV type is shown');
    t.equal(await text(page, '#connection'), 'live');

    // A long stream held open: the page shows it in flight, with its session and state.
    const long = await postMessage(server.url, longStream(4000), { 'x-claude-code-session-id': 'session-long' });
    const events = sseEvents(long);
    let received = 0;
    const reading = (async () => {
      for await (const _ of events) {
        received++;
        await new Promise((r) => setTimeout(r, 5)); // read slowly, so it stays in flight
      }
    })().catch(() => {});
    t.ok(await eventually(async () => (await rows(page, 'live')).some((r) => r[1].startsWith('session') && /prefill|decode|queued/.test(r[3])), 20),
      'the running request is listed in flight with its session and state');
    const live = (await rows(page, 'live'))[0];
    t.equal(live[2], 'claude-test', 'with the model name it asked for');
    t.ok(received > 0, 'while it streams');
    long.destroy(); // the client leaves: 499
    await reading;

    // One answered whole, one streamed, one refused.
    const plain = await postMessage(server.url, message(`${SECRET} one`), { 'x-claude-code-session-id': 'session-a' });
    t.equal(plain.statusCode, 200);
    await readJson(plain);
    const streamed = await postMessage(server.url, message(`${SECRET} two`, { stream: true }), { 'x-claude-code-session-id': 'session-a' });
    for await (const _ of sseEvents(streamed));
    const refused = await postMessage(server.url, { model: 'claude-broken', max_tokens: 'many', messages: [] });
    t.equal(refused.statusCode, 400);
    await readJson(refused);

    t.ok(await eventually(async () => (await rows(page, 'recent')).length >= 4, 20), 'four rows in recent requests');
    const recent = await rows(page, 'recent');
    const [error, second, first, left] = recent;
    t.equal(error[0], 'error', 'the refused request stands out');
    t.equal(error[2], 'claude-broken', 'and names the model it asked for');
    t.equal(error[3], '400');
    t.match(error[9], /messages/, 'with why');
    for (const row of [second, first]) {
      t.equal(row[0], '', 'an answered request is not an error');
      t.equal(row[3], '200');
      t.ok(Number(row[4].replace(/,/g, '')) > 0, 'prompt tokens');
      t.ok(Number(row[6].replace(/,/g, '')) > 0, 'output tokens');
      t.match(row[7], /\d+ (ms|s)/, 'time to first token');
      t.match(row[9], /end_turn|max_tokens/, 'stop reason');
    }
    t.ok(Number(second[5].replace(/,/g, '')) > 0, 'the second turn of the session read its prompt from the cache');
    t.equal(left[3], '499', 'the client that left is a 499');
    t.equal(left[9], 'cancelled', 'its answer was cut short');
    t.equal((await rows(page, 'live')).length, 0, 'nothing in flight any more');

    t.ok(await eventually(async () => (await rows(page, 'sessions')).some((r) => r[1].startsWith('session-a') && r[2] === '2'), 10),
      'hits per session: session-a sent two requests');
    t.ok(await eventually(async () => (await rows(page, 'prefixes')).length > 0, 10), 'a cached prefix is held in a slot');
    t.match((await rows(page, 'prefixes'))[0][1], /slot \d+ \(memory\)/);
    t.ok(await page.$('#c-ttft canvas'), 'the charts are drawn');
    const before = await snapshots(page);
    await new Promise((r) => setTimeout(r, 2200));
    t.ok((await snapshots(page)) >= before + 1, 'snapshots keep coming, about once a second');

    const body = await page.evaluate(() => document.body.innerText);
    t.notOk(body.includes(SECRET), 'no prompt text without log.prompts');

    // The screenshots, with one more request in flight.
    const another = await postMessage(server.url, longStream(4000), { 'x-claude-code-session-id': 'session-long' });
    another.on('data', () => another.pause()); // a client that stops reading: the request stays in flight
    t.ok(await eventually(async () => (await rows(page, 'live')).length > 0, 20), 'in flight again');
    await new Promise((r) => setTimeout(r, 1500)); // a snapshot or two with it
    await page.screenshot({ path: screenshotPath('dashboard-light.png'), fullPage: true });
    if (process.env.PENSIEVE_SCREENSHOT) {
      mkdirSync(dirname(process.env.PENSIEVE_SCREENSHOT), { recursive: true });
      await page.screenshot({ path: process.env.PENSIEVE_SCREENSHOT, fullPage: true });
    }
    another.destroy();

    await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'dark' }]);
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const [r, g, b] = background.match(/\d+/g)!.map(Number);
    t.ok(r + g + b < 150, `dark mode has a dark background (${background})`);
    await page.screenshot({ path: screenshotPath('dashboard-dark.png'), fullPage: true });

    await page.setViewport({ width: 390, height: 844, isMobile: true });
    await new Promise((r) => setTimeout(r, 300));
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    t.ok(overflow <= 0, `phone width: the page does not scroll sideways (${overflow} px over)`);
    await page.screenshot({ path: screenshotPath('dashboard-phone.png'), fullPage: true });
    t.same(errors, [], 'no errors in the page (a CSP refusal would be one)');
    await page.close();
  });

  t.test('the key: asked once, refused when wrong, kept for the tab; prompts shown with log.prompts', async (t) => {
    const server = await startTestServer(model, {}, 5, { server: { require_key_on_loopback: true }, log: { prompts: true } });
    let closed = false;
    t.teardown(() => (closed ? undefined : server.close()));
    const refused = await send(`${server.url}/dashboard/events`);
    t.equal(refused.statusCode, 401, 'the events need the key, as the API does');
    refused.resume();
    const foreign = await send(`${server.url}/dashboard/events`, { headers: { host: 'evil.example.com', 'x-api-key': TEST_KEY } });
    t.equal(foreign.statusCode, 403, 'the Host check applies');
    foreign.resume();

    const errors: string[] = [];
    const page = await open(browser, server.url, errors);
    await page.waitForSelector('#key-form:not([hidden])', { timeout: 10_000 });
    t.equal(await snapshots(page), 0, 'nothing is shown before the key');
    await page.type('#key-input', 'not-the-key');
    await page.click('#key-form button');
    await page.waitForFunction(() => !document.getElementById('key-error')!.hidden, { timeout: 10_000 });
    t.match(await text(page, '#key-error'), /refused/, 'a wrong key is refused and asked again');
    await page.type('#key-input', TEST_KEY);
    await page.click('#key-form button');
    t.ok(await eventually(async () => (await snapshots(page)) >= 1, 20), 'with the key, snapshots arrive');
    t.equal(await page.evaluate(() => sessionStorage.getItem('pensieve-dashboard-key')), TEST_KEY, 'kept in the tab\'s session storage');
    await page.reload({ waitUntil: 'load' });
    t.ok(await eventually(async () => (await snapshots(page)) >= 1, 20), 'a reload is not asked again');

    const answered = await postMessage(server.url, message(`${SECRET} shown`));
    await readJson(answered);
    t.ok(await eventually(async () => (await page.$$eval('#recent tbody tr', (trs) => trs.map((tr) => tr.getAttribute('title')))).some((title) => title?.includes(SECRET)), 10),
      'with log.prompts, the prompt\'s start is shown');
    t.same(errors.filter((e) => !/401/.test(e)), [], 'no errors in the page but the refused key');
    // An open page's stream must not hold the server's close.
    const started = Date.now();
    await server.close();
    closed = true;
    t.ok(Date.now() - started < 5000, `the server closes with a page open (${Date.now() - started} ms)`);
    await page.close();
  });
}
