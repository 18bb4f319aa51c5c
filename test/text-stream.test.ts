import t from 'tap';
import { completeUtf8Length, TextStream } from '../src/engine/text-stream.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

t.test('completeUtf8Length finds the last character boundary', async (t) => {
  const euro = bytes('€'); // e2 82 ac
  t.equal(completeUtf8Length(euro), 3);
  t.equal(completeUtf8Length(euro.subarray(0, 2)), 0);
  t.equal(completeUtf8Length(bytes('ab€').subarray(0, 3)), 2);
  t.equal(completeUtf8Length(bytes('a😀').subarray(0, 4)), 1);
  t.equal(completeUtf8Length(bytes('a😀')), 5);
});

t.test('a character split across tokens is emitted whole, once', async (t) => {
  const stream = new TextStream();
  const emoji = bytes('😀'); // 4 bytes, fed one byte per token
  const out = [...emoji].map((b) => stream.push(Uint8Array.of(b)).text);
  t.same(out, ['', '', '', '😀']);
  t.equal(stream.finish(), '');
});

t.test('a dangling partial character becomes U+FFFD at the end', async (t) => {
  const stream = new TextStream();
  t.equal(stream.push(Uint8Array.of(0x61, 0xe2, 0x82)).text, 'a');
  t.equal(stream.finish(), '\uFFFD');
});

t.test('stop sequences match across token boundaries and are never emitted', async (t) => {
  const stream = new TextStream(['</answer>', 'STOP']);
  const pieces = ['The answer', ' is 4.</', 'ans', 'wer> and more'];
  const out: string[] = [];
  let stopIndex = -1;
  for (const piece of pieces) {
    const chunk = stream.push(bytes(piece));
    out.push(chunk.text);
    if (chunk.stopIndex >= 0) {
      stopIndex = chunk.stopIndex;
      break;
    }
  }
  t.equal(out.join(''), 'The answer is 4.');
  t.equal(stopIndex, 0);
  t.same(out, ['The answer', ' is 4.', '', ''], 'the possible start of a stop sequence is held back');
});

t.test('held text that turns out not to be a stop is released', async (t) => {
  const stream = new TextStream(['STOP']);
  t.equal(stream.push(bytes('go ST')).text, 'go ');
  t.equal(stream.push(bytes('ART')).text, 'START');
  t.equal(stream.push(bytes(' ST')).text, ' ');
  t.equal(stream.finish(), 'ST', 'held text is released at the end');
});

t.test('the earliest stop sequence wins', async (t) => {
  const stream = new TextStream(['cd', 'b']);
  t.same(stream.push(bytes('abcd')), { text: 'a', stopIndex: 1 });
});
