// Claude-Code-shaped traffic for the benchmarks: the request Claude Code really sent first
// (../shared/fixtures/claude-code-first-request.json), its system prompt grown with filler when small, and later
// turns that add the assistant's answer and a tool result.
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { uniformRandom } from '../src/prng.js';
import { repoRoot } from './llama-tools.js';

export const FIXTURE = resolve(repoRoot, '../shared/fixtures/claude-code-first-request.json');
/** System + tools below this many tokens are grown (sizePrefix). */
const MIN_PREFIX_TOKENS = 15_000;

export type Block = { type: string; [key: string]: unknown };
export interface Message { role: string; content: string | Block[] }
/** The request fields every turn shares (everything but the messages). */
export interface BaseBody {
  model: string;
  system: Block[];
  tools: Block[];
  [key: string]: unknown;
}
export interface RequestBody extends BaseBody {
  messages: Message[];
}

const WORDS = ('alpha beta gamma delta file line edit read write command path tool check test build run note value index ' +
  'module server client token stream cache model prompt request response error status field option').split(' ');

/** Filler prose like the fixture's: `count` words of its vocabulary, 12 to a line, picked by a seeded PRNG. */
export function filler(seed: number, count: number): string {
  const next = uniformRandom(seed);
  const words = Array.from({ length: count }, () => WORDS[Math.floor(next() * WORDS.length)]);
  const lines: string[] = [];
  for (let i = 0; i < words.length; i += 12) lines.push(words.slice(i, i + 12).join(' '));
  return lines.join('\n');
}

export interface Traffic {
  /** The request fields every turn of every session shares (system, tools, model, sampling, ...). */
  base: BaseBody;
  /** The fixture's messages; the last text block of the first (user) message is each session's own prompt. */
  messages: Message[];
  /** Filler paragraphs appended to the system prompt (0 when it was already large enough). */
  grownParagraphs: number;
}

/** The fixture's request as every session's base, answers of at most `maxTokens`, greedy, streamed. */
export function loadTraffic(maxTokens: number): Traffic {
  if (!existsSync(FIXTURE)) throw new Error(`fixture not found: ${FIXTURE}`);
  const fixture = JSON.parse(readFileSync(FIXTURE, 'utf8')) as { body: RequestBody };
  const { messages, system, tools, ...rest } = fixture.body;
  return {
    base: { ...rest, system, tools, max_tokens: maxTokens, temperature: 0, stream: true },
    messages,
    grownParagraphs: 0,
  };
}

/** The system prompt with `paragraphs` filler paragraphs (80 words each) appended to its last block. */
export function grownSystem(system: Block[], paragraphs: number): Block[] {
  if (paragraphs === 0) return system;
  const extra = Array.from({ length: paragraphs }, (_, i) => filler(10_000 + i, 80)).join('\n\n');
  const last = system[system.length - 1];
  return [...system.slice(0, -1), { ...last, text: `${String(last.text)}\n\n${extra}` }];
}

/** Session s's first messages: the fixture's, with the user's own prompt (last text block) made unique. */
export function firstMessages(traffic: Traffic, s: number): Message[] {
  const messages = structuredClone(traffic.messages);
  const first = messages[0];
  if (typeof first.content === 'string') {
    first.content = `Task ${s + 1}: ${filler(500 + s, 6)}\n${first.content}`;
  } else {
    const i = first.content.map((b) => b.type).lastIndexOf('text');
    first.content[i] = { ...first.content[i], text: `Task ${s + 1}: ${filler(500 + s, 6)}` };
  }
  return messages;
}

/** The assistant's answer as returned (text and tool_use blocks), plus a Read tool_use when it had none. */
export function assistantTurn(content: Block[], s: number, t: number): { message: Message; toolUses: Block[] } {
  const kept = content.filter((b) => (b.type === 'text' && String(b.text) !== '') || b.type === 'tool_use');
  let toolUses = kept.filter((b) => b.type === 'tool_use');
  if (toolUses.length === 0) {
    const use = { type: 'tool_use', id: `toolu_bench_${s}_${t}`, name: 'Read', input: { file_path: `/work/project/src/module_${s}_${t}.ts` } };
    kept.push(use);
    toolUses = [use];
  }
  return { message: { role: 'assistant', content: kept }, toolUses };
}

/** The user's next message: a tool_result for every tool_use, the first with about `newTokens` tokens of content. */
export function toolResults(toolUses: Block[], s: number, t: number, newTokens: number): Message {
  return {
    role: 'user',
    content: toolUses.map((use, i) => ({
      type: 'tool_result',
      tool_use_id: use.id,
      content: i === 0 ? `File src/module_${s}_${t}.ts:\n${filler(1_000 * (s + 1) + t, Math.round(newTokens * 0.9))}` : 'done',
    })),
  };
}

/**
 * Grows the system prompt until system + tools count about `target` tokens, when they count under 15k;
 * `count` gives the prompt tokens of a request with the given system prompt and a one-word user message.
 */
export async function sizePrefix(traffic: Traffic, target: number, count: (system: Block[]) => Promise<number>): Promise<{ before: number; after: number }> {
  const grown = (paragraphs: number): Promise<number> => count(grownSystem(traffic.base.system, paragraphs));
  const before = await grown(0);
  if (before >= MIN_PREFIX_TOKENS) return { before, after: before };
  const perParagraph = ((await grown(10)) - before) / 10;
  let paragraphs = Math.max(1, Math.round((target - before) / perParagraph));
  let after = await grown(paragraphs);
  paragraphs = Math.max(1, paragraphs + Math.round((target - after) / perParagraph));
  after = await grown(paragraphs);
  traffic.base = { ...traffic.base, system: grownSystem(traffic.base.system, paragraphs) };
  traffic.grownParagraphs = paragraphs;
  return { before, after };
}
