// Turns a conversation into prompt tokens with the model's chat template (llama.cpp's common chat layer),
// together with what generating and reading the answer needs (tool-call grammar, parser settings).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAddon, type ChatRenderRequest, type NativeChatTemplates, type NativeModel, type RenderedChat } from '../native.js';
import { projectRoot } from '../paths.js';
import { ApiError, promptTooLong } from '../api/errors.js';
import { holdXmlStringEnums } from './xml-string-enums.js';
import type { PromptImage } from '../engine/types.js';

export interface PreparedChat {
  tokens: Int32Array;
  /** Everything but the prompt text, which `tokens` holds. */
  chat: Omit<RenderedChat, 'prompt'>;
  /**
   * Text the answer is forced to start with, already at the end of the prompt: the opening of a tool call
   * when a tool call is required. The output parser must read it before the generated text.
   */
  outputPrefix: string;
  /** The prompt's image tokens (a vision model's: src/chat/vision-renderer.ts). */
  images?: PromptImage[];
}

/**
 * ChatML (<|im_start|>) templates without tool support get the Qwen2.5 template shipped with llama.cpp:
 * the same framing, plus Hermes-style tool calls, so that tools work on such models too.
 */
const CHATML_TOOLS_TEMPLATE = join(projectRoot, 'native', 'deps', 'llama.cpp', 'models', 'templates', 'Qwen-Qwen2.5-7B-Instruct.jinja');

/**
 * The addon's error when the tool-call grammar that render() made is refused: its repetitions are beyond what
 * llama.cpp's grammar parser takes (`reason` says how), or llama.cpp's grammar sampler refuses it.
 */
interface GrammarError extends Error {
  code: 'ERR_GRAMMAR';
  reason?: string;
}
const isGrammarError = (err: unknown): err is GrammarError => (err as { code?: unknown } | undefined)?.code === 'ERR_GRAMMAR';

/** The one key of the arguments that a rendered example call is given, to find where its arguments start. */
const ARGUMENTS_MARK = 'pensieve_arguments_start';

export class ChatRenderer {
  /** Why the model's own template was replaced, if it was. */
  readonly templateNote: string | undefined;
  private readonly templates: NativeChatTemplates;
  private longestPieceBytes?: number;

  constructor(private readonly vocab: NativeModel, templateFile?: string) {
    const { ChatTemplates } = loadAddon();
    if (templateFile) {
      this.templates = new ChatTemplates(vocab, readFileSync(templateFile, 'utf8'));
      this.templateNote = `chat template from ${templateFile}`;
      return;
    }
    const own = new ChatTemplates(vocab);
    const source = vocab.info().chatTemplate ?? '';
    if (!own.caps().supports_tools && source.includes('<|im_start|>') && existsSync(CHATML_TOOLS_TEMPLATE)) {
      this.templates = new ChatTemplates(vocab, readFileSync(CHATML_TOOLS_TEMPLATE, 'utf8'));
      this.templateNote = "the model's ChatML template has no tool support: using llama.cpp's Qwen2.5 template for tools";
    } else {
      this.templates = own;
    }
  }

  /** Loads just the vocabulary of a model file (no weights) and its chat template. */
  static load(modelPath: string, templateFile?: string): ChatRenderer {
    return new ChatRenderer(new (loadAddon().Model)(modelPath, { vocabOnly: true }), templateFile);
  }

  /**
   * A required tool call (Anthropic's tool_choice any or tool) is forced the way Anthropic does it: the
   * answer is prefilled with the format's tool-call opening, and the (lazy) tool-call grammar starts
   * from it. The chat layer's own "required" grammar would let the model write text first.
   */
  prepare(request: ChatRenderRequest, maxTokens?: number): PreparedChat {
    try {
      const prepared = this.build(request, maxTokens);
      const grammar = holdXmlStringEnums(prepared.chat.grammar, request.tools);
      return grammar === prepared.chat.grammar ? prepared : { ...prepared, chat: { ...prepared.chat, grammar } };
    } catch (err) {
      if (err instanceof ApiError) throw err;
      const problems = this.toolProblems(request);
      if (problems.length > 0) throw new ApiError(400, 'invalid_request_error', `tools: ${problems.join('; ')}`);
      if (isGrammarError(err)) throw new ApiError(400, 'invalid_request_error', "tools: the tools' input schemas together make a grammar that llama.cpp refuses");
      throw err;
    }
  }

  /**
   * See prepare; a prompt that cannot fit `maxTokens` is refused (400), when it is given.
   * Formats whose tool calls open with a trigger word (Hermes' <tool_call>) are prefilled with it, and their
   * lazy grammar starts from it. Formats without one (Llama 3.1's bare JSON, harmony's channel header) are
   * prefilled with the template's own rendering of a call up to its arguments, which their "required"
   * grammar accepts: it then holds the arguments to the schema (unless the answer should reason first).
   */
  private build(request: ChatRenderRequest, maxTokens: number | undefined): PreparedChat {
    if (request.toolChoice === 'required') {
      const auto = this.templates.render(JSON.stringify({ ...request, toolChoice: 'auto' }));
      if (auto.grammarLazy && auto.toolCallStart !== '') {
        const { prompt, ...chat } = auto;
        const opening = this.vocab.tokenize(auto.toolCallStart, false, true);
        return {
          tokens: this.tokenize(prompt + auto.toolCallStart, maxTokens),
          chat: { ...chat, grammarPrefill: opening },
          outputPrefix: auto.toolCallStart,
        };
      }
    }
    const { prompt, ...chat } = this.templates.render(JSON.stringify(request));
    // With thinking asked for, a template that reasons (harmony) is left to reason before its call, as trained.
    const reasonsFirst = request.enableThinking === true && chat.supportsThinking;
    const forcedByGrammar = request.toolChoice === 'required' && !chat.grammarLazy && chat.grammar !== '';
    const opening = forcedByGrammar && !reasonsFirst ? this.renderedCallOpening(request, prompt) : '';
    if (opening !== '') {
      const grammarPrefill = new Int32Array([...chat.grammarPrefill, ...this.vocab.tokenize(opening, false, true)]);
      return { tokens: this.tokenize(prompt + opening, maxTokens), chat: { ...chat, grammarPrefill }, outputPrefix: opening };
    }
    return { tokens: this.tokenize(prompt, maxTokens), chat, outputPrefix: '' };
  }

  /**
   * What the template writes after `prompt` (the request rendered for generation) when the answer is a call
   * to the request's first tool, up to the call's JSON arguments; with several tools, only up to the tool's
   * name, which the grammar then chooses. '' where the template writes calls otherwise (XML parameters), or
   * where the request's rendering is not the start of the conversation that holds the call.
   */
  private renderedCallOpening(request: ChatRenderRequest, prompt: string): string {
    const tools = (request.tools ?? []) as Array<{ function?: { name?: string } }>;
    const name = tools[0]?.function?.name;
    if (!name) return '';
    const call = { id: 'call_0', type: 'function', function: { name, arguments: `{"${ARGUMENTS_MARK}":0}` } };
    const messages = [...request.messages, { role: 'assistant', content: '', tool_calls: [call] }];
    const withCall = this.templates.render(JSON.stringify({ ...request, messages })).prompt;
    if (!withCall.startsWith(prompt)) return '';
    const answer = withCall.slice(prompt.length);
    const args = answer.search(new RegExp(`\\{\\s*"${ARGUMENTS_MARK}"`));
    if (args <= 0) return '';
    const opening = answer.slice(0, args);
    return tools.length === 1 ? opening : opening.slice(0, Math.max(0, opening.indexOf(name)));
  }

  /**
   * For a request that could not be rendered: the tools that cannot be rendered alone (each with a one-line
   * conversation), and what is wrong with each one's input_schema.
   */
  private toolProblems(request: ChatRenderRequest): string[] {
    const problems: string[] = [];
    for (const tool of request.tools ?? []) {
      try {
        this.templates.render(JSON.stringify({ messages: [{ role: 'user', content: '' }], tools: [tool], toolChoice: 'auto' }));
      } catch (err) {
        const name = (tool as { function?: { name?: string } }).function?.name;
        if (isGrammarError(err)) {
          const why = err.reason ?? 'llama.cpp refuses the grammar made from it (a $ref cycle, for one, makes a rule that recurses before matching any text)';
          problems.push(`the input_schema of tool '${name}' cannot be held to by a grammar: ${why}`);
        } else {
          // The chat layer's schema errors come after a preamble about "parser generation": keep what names the schema's fault.
          const message = (err as Error).message;
          problems.push(`the input_schema of tool '${name}' cannot be used: ${message.slice(Math.max(0, message.indexOf('JSON schema error')))}`);
        }
      }
    }
    return problems;
  }

  /**
   * The template writes special tokens (<|im_start|> ...) as text: parse them as such. BOS is left to the
   * tokenizer (the chat layer strips it from the text when the vocabulary adds it). A conversation's next
   * request repeats its earlier text, whose tokens the vocabulary keeps (tokenizePrompt).
   * Tokenizing megabytes takes seconds, so a prompt whose length alone proves it longer than `maxTokens`
   * is refused first: no token covers more bytes than the vocabulary's longest piece.
   */
  protected tokenize(prompt: string, maxTokens?: number): Int32Array {
    if (maxTokens !== undefined) {
      const atLeast = Math.ceil(Buffer.byteLength(prompt, 'utf8') / this.longestPiece());
      if (atLeast > maxTokens) throw promptTooLong(atLeast, maxTokens);
    }
    return this.vocab.tokenizePrompt(prompt);
  }

  /** Bytes of the vocabulary's longest token text (special tokens' included). */
  private longestPiece(): number {
    if (this.longestPieceBytes === undefined) {
      const { offsets } = this.vocab.tokenPieces();
      let longest = 1;
      for (let t = 0; t + 1 < offsets.length; t++) longest = Math.max(longest, offsets[t + 1]! - offsets[t]!);
      this.longestPieceBytes = longest;
    }
    return this.longestPieceBytes;
  }
}
