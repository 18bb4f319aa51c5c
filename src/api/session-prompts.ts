// Claude Code sends `x-claude-code-session-id` with every request of a session. A session's next prompt
// should extend its previous one (its turns only grow); where it does not, the prefix cache loses all
// that follows, so the place is worth a log line: the next part of Claude Code's requests that varies
// without meaning (as its billing header did) is then found fast.
import { commonPrefixLength } from '../engine/prefix-cache.js';

/** Sessions remembered; older ones are forgotten first. */
const MAX_SESSIONS = 256;

export interface Divergence {
  /** The first token of the new prompt that differs from the session's previous prompt. */
  index: number;
  previous: Int32Array;
}

export class SessionPrompts {
  /** Each session's last prompt, least recently seen first. */
  private readonly last = new Map<string, Int32Array>();

  /**
   * Records the session's prompt; returns where it departs from the session's previous prompt, or
   * undefined when it extends it (or is the session's first).
   */
  record(session: string, prompt: Int32Array): Divergence | undefined {
    const previous = this.last.get(session);
    this.last.delete(session);
    this.last.set(session, prompt);
    if (this.last.size > MAX_SESSIONS) this.last.delete(this.last.keys().next().value!);
    if (!previous) return undefined;
    const index = commonPrefixLength(previous, prompt);
    return index < previous.length ? { index, previous } : undefined;
  }
}
