// Where a session's prompt stops extending its previous one (SessionPrompts), alone.
import t from 'tap';
import { SessionPrompts } from '../src/api/session-prompts.js';

const tokens = (...ids: number[]): Int32Array => Int32Array.from(ids);

t.test('a prompt that extends the session\'s previous one is no divergence; one that rewrites it is', async (t) => {
  const sessions = new SessionPrompts();
  t.equal(sessions.record('a', tokens(1, 2, 3)), undefined, 'a session\'s first prompt');
  t.equal(sessions.record('a', tokens(1, 2, 3, 4, 5)), undefined, 'the next turn extends it');
  t.equal(sessions.record('b', tokens(9, 9)), undefined, 'sessions are apart');
  t.match(sessions.record('a', tokens(1, 2, 7, 4, 5, 6)), { index: 2, previous: tokens(1, 2, 3, 4, 5) }, 'rewritten from token 2');
  t.equal(sessions.record('a', tokens(1, 2, 7, 4, 5, 6, 8)), undefined, 'compared with the latest prompt');
});

t.test('old sessions are forgotten first', async (t) => {
  const sessions = new SessionPrompts();
  for (let i = 0; i < 300; i++) sessions.record(`s${i}`, tokens(i));
  t.equal(sessions.record('s0', tokens(5)), undefined, 'the oldest was forgotten: a first prompt again');
  t.ok(sessions.record('s299', tokens(5)), 'a recent one is remembered');
});
