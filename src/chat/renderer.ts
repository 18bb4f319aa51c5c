// Turns a conversation into prompt tokens with the model's chat template (llama.cpp's common chat layer),
// together with what generating and reading the answer needs (tool-call grammar, parser settings).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAddon, type ChatRenderRequest, type NativeChatTemplates, type NativeModel, type RenderedChat } from '../native.js';
import { projectRoot } from '../paths.js';

export interface PreparedChat {
  tokens: Int32Array;
  /** Everything but the prompt text, which `tokens` holds. */
  chat: Omit<RenderedChat, 'prompt'>;
  /**
   * Text the answer is forced to start with, already at the end of the prompt: the opening of a tool call
   * when a tool call is required. The output parser must read it before the generated text.
   */
  outputPrefix: string;
}

/**
 * ChatML (<|im_start|>) templates without tool support get the Qwen2.5 template shipped with llama.cpp:
 * the same framing, plus Hermes-style tool calls, so that tools work on such models too.
 */
const CHATML_TOOLS_TEMPLATE = join(projectRoot, 'native', 'deps', 'llama.cpp', 'models', 'templates', 'Qwen-Qwen2.5-7B-Instruct.jinja');

export class ChatRenderer {
  /** Why the model's own template was replaced, if it was. */
  readonly templateNote: string | undefined;
  private readonly templates: NativeChatTemplates;

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
  prepare(request: ChatRenderRequest): PreparedChat {
    if (request.toolChoice === 'required') {
      const auto = this.templates.render(JSON.stringify({ ...request, toolChoice: 'auto' }));
      if (auto.grammarLazy && auto.toolCallStart !== '') {
        const { prompt, ...chat } = auto;
        const opening = this.vocab.tokenize(auto.toolCallStart, false, true);
        return {
          tokens: this.tokenize(prompt + auto.toolCallStart),
          chat: { ...chat, grammarPrefill: opening },
          outputPrefix: auto.toolCallStart,
        };
      }
    }
    const { prompt, ...chat } = this.templates.render(JSON.stringify(request));
    return { tokens: this.tokenize(prompt), chat, outputPrefix: '' };
  }

  /**
   * The template writes special tokens (<|im_start|> ...) as text: parse them as such. BOS is left to the
   * tokenizer (the chat layer strips it from the text when the vocabulary adds it). A conversation's next
   * request repeats its earlier text, whose tokens the vocabulary keeps (tokenizePrompt).
   */
  private tokenize(prompt: string): Int32Array {
    return this.vocab.tokenizePrompt(prompt);
  }
}
