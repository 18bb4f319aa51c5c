// Builds the Anthropic message from the parsed generation: the content blocks (thinking, text, tool_use)
// and, for streaming, the content_block_start / _delta / _stop events, one block open at a time.
import { randomBytes } from 'node:crypto';
import type { ChatDiff } from '../native.js';

export type ContentBlock =
  | { type: 'text'; text: string }
  | { type: 'thinking'; thinking: string; signature: string }
  | { type: 'tool_use'; id: string; name: string; input: Record<string, unknown> };

export interface StreamEvent {
  event: string;
  data: Record<string, unknown>;
}

/** A local model's thinking carries no Anthropic signature; this marks it as ours. */
const THINKING_SIGNATURE = Buffer.from('pensieve-local-thinking').toString('base64');

export const newToolUseId = (): string => `toolu_${randomBytes(12).toString('base64url')}`;

interface OpenBlock {
  block: ContentBlock;
  /** For tool_use: the JSON text of the input so far. */
  json: string;
  toolIndex: number;
}

export class MessageBuilder {
  readonly content: ContentBlock[] = [];
  private open: OpenBlock | undefined;
  private readonly toolIds = new Map<number, string>();

  /** `singleToolCall`: one tool call at most (disable_parallel_tool_use, or one forced tool); later ones are dropped. */
  constructor(private readonly showThinking: boolean, private readonly singleToolCall = false) {}

  get hasToolUse(): boolean {
    return this.content.some((b) => b.type === 'tool_use');
  }

  /**
   * Whether the one tool call allowed is complete: closed, or its input a whole JSON object (the grammar
   * closes the object once, so nothing more of the input can follow).
   */
  get singleCallDone(): boolean {
    if (!this.singleToolCall || !this.hasToolUse) return false;
    return this.open?.block.type !== 'tool_use' || isJsonObject(this.open.json);
  }

  /** Applies parser diffs; returns the stream events they make. */
  apply(diffs: ChatDiff[]): StreamEvent[] {
    const events: StreamEvent[] = [];
    for (const diff of diffs) {
      if (diff.reasoning && this.showThinking) {
        const block = this.ensureOpen('thinking', -1, events) as Extract<ContentBlock, { type: 'thinking' }>;
        block.thinking += diff.reasoning;
        events.push(this.delta({ type: 'thinking_delta', thinking: diff.reasoning }));
      }
      if (diff.content) {
        const block = this.ensureOpen('text', -1, events) as Extract<ContentBlock, { type: 'text' }>;
        block.text += diff.content;
        events.push(this.delta({ type: 'text_delta', text: diff.content }));
      }
      if (diff.toolIndex !== undefined) {
        if (this.singleToolCall && diff.toolIndex > 0) continue;
        if (diff.toolName) this.toolIds.set(diff.toolIndex, this.toolIds.get(diff.toolIndex) ?? newToolUseId());
        if (!this.toolIds.has(diff.toolIndex)) continue; // arguments before a name: not a call yet
        this.ensureOpen('tool_use', diff.toolIndex, events, diff.toolName);
        if (diff.toolArguments) {
          this.open!.json += diff.toolArguments;
          events.push(this.delta({ type: 'input_json_delta', partial_json: diff.toolArguments }));
        }
      }
    }
    return events;
  }

  /** Closes the last block; returns its closing events. */
  finish(): StreamEvent[] {
    const events: StreamEvent[] = [];
    this.close(events);
    return events;
  }

  private ensureOpen(type: ContentBlock['type'], toolIndex: number, events: StreamEvent[], toolName = ''): ContentBlock {
    if (this.open && this.open.block.type === type && this.open.toolIndex === toolIndex) return this.open.block;
    this.close(events);
    const block: ContentBlock =
      type === 'text' ? { type, text: '' }
      : type === 'thinking' ? { type, thinking: '', signature: '' }
      : { type, id: this.toolIds.get(toolIndex)!, name: toolName, input: {} };
    this.open = { block, json: '', toolIndex };
    this.content.push(block);
    const start = type === 'thinking' ? { type, thinking: '' } : type === 'text' ? { type, text: '' } : { ...block, input: {} };
    events.push({ event: 'content_block_start', data: { type: 'content_block_start', index: this.content.length - 1, content_block: start } });
    return block;
  }

  private close(events: StreamEvent[]): void {
    if (!this.open) return;
    const { block, json } = this.open;
    if (block.type === 'thinking') {
      block.signature = THINKING_SIGNATURE;
      events.push(this.delta({ type: 'signature_delta', signature: THINKING_SIGNATURE }));
    }
    if (block.type === 'tool_use') block.input = parseToolInput(json);
    events.push({ event: 'content_block_stop', data: { type: 'content_block_stop', index: this.content.length - 1 } });
    this.open = undefined;
  }

  private delta(delta: Record<string, unknown>): StreamEvent {
    return { event: 'content_block_delta', data: { type: 'content_block_delta', index: this.content.length - 1, delta } };
  }
}

/** The JSON object that `json` holds, if it holds a whole one. */
function jsonObject(json: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(json);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const isJsonObject = (json: string): boolean => jsonObject(json) !== undefined;

/** A tool call's input; a call cut short (max_tokens) may hold incomplete JSON, which gives {}. */
function parseToolInput(json: string): Record<string, unknown> {
  return json.trim() === '' ? {} : (jsonObject(json) ?? {});
}
