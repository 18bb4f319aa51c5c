// Model files for tests: llama.cpp's vocab-only GGUFs, a generated tiny model, tiny models of the catalogue's
// families, and the shared models.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { projectRoot } from '../../src/paths.js';
import {
  MODEL_PRESETS,
  writeRandomModel,
  writeRandomQwen2Model,
  type AddedToken,
  type ModelShape,
  type RandomArch,
  type TokenizerChanges,
} from '../../src/model/random-model.js';
import type { ModelFamily } from '../../src/model/catalogue.js';

/** A vocab-only GGUF shipped with llama.cpp, e.g. 'qwen2' for models/ggml-vocab-qwen2.gguf. */
export function llamaVocabPath(name = 'qwen2'): string {
  return join(projectRoot, 'native', 'deps', 'llama.cpp', 'models', `ggml-vocab-${name}.gguf`);
}

let tinyModel: Promise<string> | undefined;
/**
 * Weights this large make the tiny model's output depend on its whole context: with the usual 0.02, 64 wide,
 * attention is nearly uniform and every prompt gives the same tokens, so a test comparing a cached answer
 * with a cold one could not fail.
 */
export const TINY_WEIGHT_STD = 0.4;

/**
 * A random-weight qwen2 model of the 'tiny' preset (seed 1), generated once and cached under
 * build/test-models/std<weight std>. Delete the file after changing the generator.
 */
export function tinyModelPath(): Promise<string> {
  tinyModel ??= ensureTinyModel();
  return tinyModel;
}

async function ensureTinyModel(): Promise<string> {
  const dir = join(projectRoot, 'build', 'test-models', `std${TINY_WEIGHT_STD}`);
  const path = join(dir, 'tiny-qwen2.gguf');
  if (existsSync(path)) return path;
  await mkdir(dir, { recursive: true });
  // Test files run in parallel processes: write privately, then rename, which is atomic, so no
  // process ever sees a partial file (and concurrent writers produce identical files).
  const temp = `${path}.${process.pid}.${Date.now()}.tmp`;
  try {
    await writeRandomQwen2Model({ vocabPath: llamaVocabPath('qwen2'), outPath: temp, shape: MODEL_PRESETS.tiny, seed: 1, weightStd: TINY_WEIGHT_STD });
    await rename(temp, path);
  } finally {
    await rm(temp, { force: true });
  }
  return path;
}

/** A model from the shared folder next to the repository (`../shared/models/`), if present. */
export function sharedModelPath(file: string): string | undefined {
  const path = join(projectRoot, '..', 'shared', 'models', file);
  return existsSync(path) ? path : undefined;
}

// ---------------------------------------------------------------------------------------------
// Random-weight models of the catalogue's families (src/model/catalogue.ts): each family's architecture,
// its tokenizer (llama.cpp's vocab file plus the family's added tokens) and its chat template (llama.cpp's
// models/templates). Where llama.cpp ships no vocab file of the family's tokenizer, a stand-in is used and
// `standIn` says which and why: the template, the special tokens, the grammar and the parsing are the
// family's, the BPE of plain text is not.

/** Qwen2.5/Qwen3's added tokens (tokenizer_config.json's added_tokens_decoder), which ggml-vocab-qwen2 has as [PAD] placeholders. */
const QWEN3_ADDED_TOKENS: AddedToken[] = [
  ...['<|object_ref_start|>', '<|object_ref_end|>', '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>',
    '<|vision_start|>', '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>'].map((text, i) => ({ id: 151646 + i, text, control: true })),
  ...['<tool_call>', '</tool_call>', '<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>', '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>',
    '<tool_response>', '</tool_response>', '<think>', '</think>'].map((text, i) => ({ id: 151657 + i, text, control: false })),
];

/**
 * Llama 3.1's special tokens 128000-128255. ggml-vocab-llama-bpe is Llama 3's tokenizer (the same BPE), whose
 * 3.1 successor named five of its reserved tokens and numbered the rest again.
 */
function llama31SpecialTokens(): AddedToken[] {
  const named: Record<number, string> = {
    128000: '<|begin_of_text|>', 128001: '<|end_of_text|>', 128004: '<|finetune_right_pad_id|>', 128006: '<|start_header_id|>',
    128007: '<|end_header_id|>', 128008: '<|eom_id|>', 128009: '<|eot_id|>', 128010: '<|python_tag|>',
  };
  let reserved = 0;
  return Array.from({ length: 256 }, (_, i) => {
    const id = 128000 + i;
    return { id, text: named[id] ?? `<|reserved_special_token_${reserved++}|>`, control: true };
  });
}

/** o200k_harmony's special tokens (gpt-oss), at their ids; the others up to 201087 are <|reserved_N|>. */
function harmonySpecialTokens(): AddedToken[] {
  const named: Record<number, string> = {
    199998: '<|startoftext|>', 199999: '<|endoftext|>', 200002: '<|return|>', 200003: '<|constrain|>', 200005: '<|channel|>',
    200006: '<|start|>', 200007: '<|end|>', 200008: '<|message|>', 200012: '<|call|>', 200018: '<|endofprompt|>',
  };
  return Array.from({ length: 201088 - 199998 }, (_, i) => {
    const id = 199998 + i;
    return { id, text: named[id] ?? `<|reserved_${id}|>`, control: true };
  });
}

/** The control tokens Devstral's template writes (Tekken's first ids hold them; here they follow the stand-in's vocabulary). */
const MISTRAL_CONTROL_TOKENS = ['<s>', '</s>', '[INST]', '[/INST]', '[AVAILABLE_TOOLS]', '[/AVAILABLE_TOOLS]', '[TOOL_RESULTS]', '[/TOOL_RESULTS]',
  '[TOOL_CALLS]', '[IMG]', '[SYSTEM_PROMPT]', '[/SYSTEM_PROMPT]', '[ARGS]', '[CALL_ID]'];

export interface RandomFamily {
  /** The catalogue's family (CatalogueEntry.family). */
  family: ModelFamily;
  arch: RandomArch;
  /** llama.cpp's models/ggml-vocab-<vocab>.gguf. */
  vocab: string;
  /** llama.cpp's models/templates/<template>.jinja. */
  template: string;
  tokenizer: Omit<TokenizerChanges, 'chatTemplate'>;
  shape: ModelShape;
  /** Whether the template reasons (<think>, harmony's analysis channel) when the request enables thinking. */
  reasons: boolean;
  /** Why the tokenizer is a stand-in, when it is not the family's own. */
  standIn?: string;
}

const TINY = MODEL_PRESETS.tiny;
const tinyMoe = { ...TINY, headDim: 32, experts: { count: 4, used: 2, ffn: 64 } };

export const RANDOM_FAMILIES: Readonly<Record<ModelFamily, RandomFamily>> = {
  qwen3: {
    family: 'qwen3', arch: 'qwen3', vocab: 'qwen2', template: 'Qwen-Qwen3-0.6B',
    tokenizer: { tokens: QWEN3_ADDED_TOKENS, eosId: 151645 },
    shape: { ...TINY, headDim: 32 }, reasons: true,
  },
  'qwen3-coder': {
    family: 'qwen3-coder', arch: 'qwen3moe', vocab: 'qwen2', template: 'Qwen3-Coder',
    tokenizer: { tokens: QWEN3_ADDED_TOKENS, eosId: 151645 },
    shape: tinyMoe, reasons: false,
  },
  llama3: {
    family: 'llama3', arch: 'llama', vocab: 'llama-bpe', template: 'meta-llama-Llama-3.1-8B-Instruct',
    tokenizer: { tokens: llama31SpecialTokens(), bosId: 128000, eosId: 128009 },
    shape: TINY, reasons: false,
  },
  'gpt-oss': {
    family: 'gpt-oss', arch: 'gpt-oss', vocab: 'llama-bpe', template: 'openai-gpt-oss-120b',
    tokenizer: { tokens: harmonySpecialTokens(), bosId: 199998, eosId: 200002, paddingId: 199999 },
    shape: { ...tinyMoe, headDim: 16, slidingWindow: 128 }, reasons: true,
    standIn: "o200k_harmony's BPE is not among llama.cpp's vocab files: Llama 3's BPE (another tiktoken vocabulary) with harmony's special tokens at their ids",
  },
  devstral: {
    family: 'devstral', arch: 'llama', vocab: 'llama-bpe', template: 'unsloth-mistral-Devstral-Small-2507',
    tokenizer: {
      tokens: MISTRAL_CONTROL_TOKENS.map((text, i) => ({ id: 128256 + i, text, control: true })),
      bosId: 128256, eosId: 128257, addBos: true,
    },
    shape: TINY, reasons: false,
    standIn: "Mistral's Tekken BPE is not among llama.cpp's vocab files: Llama 3's BPE (another tiktoken vocabulary) with the control tokens of Devstral's template added",
  },
};

/** Bump when the families' models change: their files are cached under build/test-models/families-v<N>. */
const FAMILY_MODELS_VERSION = 1;
const familyModels = new Map<ModelFamily, Promise<string>>();

/** A tiny random-weight model of `family` (seed 1), generated once and cached under build/test-models. */
export function familyModelPath(family: ModelFamily): Promise<string> {
  let path = familyModels.get(family);
  if (!path) familyModels.set(family, (path = ensureFamilyModel(RANDOM_FAMILIES[family])));
  return path;
}

async function ensureFamilyModel(f: RandomFamily): Promise<string> {
  const dir = join(projectRoot, 'build', 'test-models', `families-v${FAMILY_MODELS_VERSION}`);
  const path = join(dir, `${f.family}-${f.arch}.gguf`);
  if (existsSync(path)) return path;
  await mkdir(dir, { recursive: true });
  const temp = `${path}.${process.pid}.${Date.now()}.tmp`;
  try {
    const chatTemplate = readFileSync(join(llamaTemplatesDir, `${f.template}.jinja`), 'utf8');
    await writeRandomModel({
      vocabPath: llamaVocabPath(f.vocab), outPath: temp, arch: f.arch, shape: f.shape, seed: 1, weightStd: TINY_WEIGHT_STD,
      tokenizer: { ...f.tokenizer, chatTemplate },
    });
    await rename(temp, path);
  } finally {
    await rm(temp, { force: true });
  }
  return path;
}

/** llama.cpp's chat templates (models/templates). */
export const llamaTemplatesDir = join(projectRoot, 'native', 'deps', 'llama.cpp', 'models', 'templates');
