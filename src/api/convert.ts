// From an Anthropic Messages request to what the chat template renders (OpenAI-style messages and
// tools, which llama.cpp's chat layer reads) and to the engine's sampling parameters.
import type { ChatRenderRequest } from '../native.js';
import type { GenerateParams } from '../engine/types.js';
import { ApiError } from './errors.js';
import { DEFAULT_IMAGE_OPTIONS, imageNotes, type ImageHandler } from './images.js';
import {
  isCustomTool,
  type ContentBlockParam,
  type CountTokensRequest,
  type MessagesRequest,
  type SystemParam,
  type TextBlockParam,
  type ToolResultBlockParam,
} from './schemas.js';

type ChatMessage =
  | { role: 'system' | 'user'; content: string }
  | { role: 'assistant'; content: string; reasoning_content?: string; tool_calls?: OpenAiToolCall[] }
  | { role: 'tool'; tool_call_id: string; content: string };

interface OpenAiToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

const invalid = (message: string): ApiError => new ApiError(400, 'invalid_request_error', message);

/**
 * Claude Code's first system block, `x-anthropic-billing-header: cc_version=<version>.<suffix>;
 * cc_entrypoint=<entry>;`, is billing metadata whose suffix follows the session's first prompt. Kept, it
 * would make every session's prompt differ from its first tokens, so that no two sessions could share the
 * long system prompt and tools that follow it in the prefix cache; a local model has no use for it.
 */
const BILLING_HEADER = /^x-anthropic-billing-header:[^\n]*(\n|$)/;

/** The top-level system prompt's text, without Claude Code's billing header. */
function systemText(system: SystemParam): string {
  const texts = typeof system === 'string' ? [system] : system.map((b) => b.text);
  return texts.map((text) => text.replace(BILLING_HEADER, '')).filter((text) => text.length > 0).join('\n');
}

/** The text of blocks that can only be text here (an image becomes what `images` puts in its place); anything else is a clear 400. */
function textOf(blocks: ContentBlockParam[] | TextBlockParam[] | string, where: string, images: ImageHandler): string {
  if (typeof blocks === 'string') return blocks;
  return blocks
    .map((block, i) => {
      switch (block.type) {
        case 'text':
          return block.text;
        case 'image':
          return images(block, `${where}.${i}`);
        case 'document':
          if (block.source.type === 'text') return block.source.data;
          throw invalid(`${where}.${i}: only plain-text documents are supported by this model`);
        default:
          throw invalid(`${where}.${i}: a ${block.type} block is not supported here`);
      }
    })
    .join('\n');
}

function toolResultText(block: ToolResultBlockParam, where: string, images: ImageHandler): string {
  const content = block.content === undefined ? '' : textOf(block.content as ContentBlockParam[] | string, `${where}.content`, images);
  return block.is_error ? `Error: ${content}` : content;
}

function convertMessages(request: CountTokensRequest, images: ImageHandler): ChatMessage[] {
  const out: ChatMessage[] = [];
  if (request.system !== undefined) {
    const text = systemText(request.system);
    if (text.length > 0) out.push({ role: 'system', content: text });
  }
  request.messages.forEach((message, m) => {
    const where = `messages.${m}.content`;
    if (message.role === 'system') {
      out.push({ role: 'system', content: textOf(message.content, where, images) });
      return;
    }
    const blocks: ContentBlockParam[] = typeof message.content === 'string' ? [{ type: 'text', text: message.content }] : message.content;
    if (message.role === 'assistant') {
      const text: string[] = [];
      const reasoning: string[] = [];
      const toolCalls: OpenAiToolCall[] = [];
      blocks.forEach((block, i) => {
        if (block.type === 'text') text.push(block.text);
        else if (block.type === 'thinking') reasoning.push(block.thinking);
        else if (block.type === 'redacted_thinking') return; // opaque to a local model
        else if (block.type === 'tool_use') {
          toolCalls.push({ id: block.id, type: 'function', function: { name: block.name, arguments: JSON.stringify(block.input) } });
        } else throw invalid(`${where}.${i}: a ${block.type} block is not supported in an assistant turn`);
      });
      out.push({
        role: 'assistant',
        content: text.join('\n'),
        ...(reasoning.length > 0 && { reasoning_content: reasoning.join('\n') }),
        ...(toolCalls.length > 0 && { tool_calls: toolCalls }),
      });
      return;
    }
    // A user turn: tool results become tool messages (first, as they answer the previous turn's calls),
    // the rest one user message.
    const rest: ContentBlockParam[] = [];
    blocks.forEach((block, i) => {
      if (block.type === 'tool_result') {
        out.push({ role: 'tool', tool_call_id: block.tool_use_id, content: toolResultText(block, `${where}.${i}`, images) });
      } else rest.push(block);
    });
    if (rest.length > 0) out.push({ role: 'user', content: textOf(rest, where, images) });
  });
  return out;
}

function convertTools(request: CountTokensRequest): { tools: unknown[]; toolChoice: ChatRenderRequest['toolChoice']; parallel: boolean } {
  const choice = request.tool_choice ?? { type: 'auto' };
  const offered = (request.tools ?? []).filter((tool, i) => {
    if (!isCustomTool(tool)) {
      throw invalid(`tools.${i}: ${tool.type} is one of Anthropic's server tools, which this local server does not run`);
    }
    return tool.defer_loading !== true; // not callable until a tool search loads it
  });
  let tools = offered;
  if (choice.type === 'tool') {
    tools = offered.filter((tool) => isCustomTool(tool) && tool.name === choice.name);
    if (tools.length === 0) throw invalid(`tool_choice.name: no tool named ${choice.name}`);
  }
  const toolChoice = choice.type === 'none' ? 'none' : choice.type === 'auto' ? 'auto' : 'required';
  if (toolChoice === 'required' && tools.length === 0) throw invalid(`tool_choice: ${choice.type} needs at least one tool`);
  return {
    tools: tools.map((tool) => {
      if (!isCustomTool(tool)) throw new Error('unreachable');
      const { $schema: _schema, ...parameters } = tool.input_schema;
      return { type: 'function', function: { name: tool.name, description: tool.description ?? '', parameters } };
    }),
    toolChoice,
    parallel: !('disable_parallel_tool_use' in choice && choice.disable_parallel_tool_use === true),
  };
}

/** Whether the request asks to see the model's reasoning (thinking blocks). */
export function thinkingRequested(request: CountTokensRequest): boolean {
  return request.thinking?.type === 'enabled' || request.thinking?.type === 'adaptive';
}

/** `images` puts text in each image block's place: by default, a note (the model cannot see it). */
export function toChatRequest(request: CountTokensRequest, images: ImageHandler = imageNotes(DEFAULT_IMAGE_OPTIONS)): ChatRenderRequest {
  const { tools, toolChoice, parallel } = convertTools(request);
  return {
    messages: convertMessages(request, images),
    ...(tools.length > 0 && { tools }),
    toolChoice,
    parallelToolCalls: parallel,
    enableThinking: thinkingRequested(request),
  };
}

/** Sampling settings of the request; Anthropic's default temperature is 1. */
export function samplingParams(request: MessagesRequest): Pick<GenerateParams, 'temperature' | 'topP' | 'topK' | 'stopSequences'> {
  return {
    temperature: request.temperature ?? 1,
    topP: request.top_p ?? 1,
    topK: request.top_k ?? 0,
    stopSequences: request.stop_sequences ?? [],
  };
}
