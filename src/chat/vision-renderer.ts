// Prompts with images, for a model with a projector: the converter puts a marker where each image goes,
// the chat template renders the conversation around the markers, and the prompt is tokenized piece by
// piece with each image's tokens (the projector's: its format's marker tokens and its image chunks) in
// between. An image chunk's positions hold placeholder ids derived from the chunk's key, which is the
// image's content hash: the prefix cache compares token ids, so a conversation that repeats an image
// matches its cached prefix through the image, and a different image departs from it there.
import { createHash, randomBytes } from 'node:crypto';
import { loadAddon, type ChatRenderRequest, type NativeModel, type NativeVision } from '../native.js';
import { ApiError } from '../api/errors.js';
import { decodeImage, type DecodedImage, type ImageHandler } from '../api/images.js';
import type { ImageBlockParam } from '../api/schemas.js';
import type { PromptImage } from '../engine/types.js';
import { ChatRenderer, type PreparedChat } from './renderer.js';
import type { VisionSettings } from './prepare-pool.js';

/** An image of the request, with where it was (for errors). */
export interface PlacedImage extends DecodedImage {
  where: string;
}

/** The placeholder id of an image chunk's tokens: negative, so no vocabulary token has it. */
export function placeholderToken(chunk: string): number {
  return -1 - (createHash('sha256').update(chunk).digest().readUInt32LE(0) & 0x7fffffff);
}

const concat = (parts: Int32Array[]): Int32Array => {
  const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
};

export class VisionRenderer extends ChatRenderer {
  /** Stands where an image goes in the rendered prompt; random, so that no request's text can forge one. */
  private readonly marker = `<__pensieve_image_${randomBytes(8).toString('hex')}__>`;
  /** The images of the request being prepared, in prompt order, and the image tokens found for them. */
  private images: PlacedImage[] = [];
  private spans: PromptImage[] = [];
  /** The BOS the prompt tokenizer puts at the start of text, if it does. */
  private readonly leadingBos: number | undefined;

  /** The most tokens an image may have, when its tokens attend both ways (the engine computes it whole). */
  private readonly wholeImageTokens: number;

  constructor(private readonly textVocab: NativeModel, private readonly vision: NativeVision, wholeImageTokens: number, templateFile?: string) {
    super(textVocab, templateFile);
    const { addBos, bos } = textVocab.info();
    this.leadingBos = addBos ? bos : undefined;
    this.wholeImageTokens = vision.info().nonCausal ? wholeImageTokens : Infinity;
  }

  /** Loads the vocabulary of a model file and opens its projector (shared with the engine thread). */
  static loadWithProjector(modelPath: string, settings: VisionSettings, templateFile?: string): VisionRenderer {
    const addon = loadAddon();
    const vision = new addon.Vision(settings.mmproj, modelPath, { gpu: settings.gpu, threads: settings.threads });
    return new VisionRenderer(new addon.Model(modelPath, { vocabOnly: true }), vision, settings.wholeImageTokens, templateFile);
  }

  /** An image handler for one request: each image is checked, collected, and marked in its place. */
  imageHandler(maxBytes: number): { handler: ImageHandler; images: PlacedImage[] } {
    const images: PlacedImage[] = [];
    const handler = (block: ImageBlockParam, where: string): string => {
      images.push({ ...decodeImage(block, where, maxBytes), where });
      return this.marker;
    };
    return { handler, images };
  }

  /** Prepares a request whose images `images` (from imageHandler) marked. */
  prepareWithImages(request: ChatRenderRequest, images: PlacedImage[], maxTokens?: number): PreparedChat {
    this.images = images;
    this.spans = [];
    try {
      const prepared = this.prepare(request, maxTokens);
      return this.spans.length > 0 ? { ...prepared, images: this.spans } : prepared;
    } finally {
      this.images = [];
      this.spans = [];
    }
  }

  protected override tokenize(prompt: string, maxTokens?: number): Int32Array {
    const pieces = prompt.split(this.marker);
    if (pieces.length - 1 !== this.images.length) {
      throw new ApiError(400, 'invalid_request_error', `the chat template kept ${pieces.length - 1} of the request's ${this.images.length} images: they cannot be placed`);
    }
    const parts = [super.tokenize(pieces[0]!, maxTokens)];
    let length = parts[0]!.length;
    this.images.forEach((image, i) => {
      for (const part of this.imageParts(image)) {
        if ('text' in part) parts.push(part.text);
        else {
          if (part.tokens > this.wholeImageTokens) {
            throw new ApiError(400, 'invalid_request_error', `${image.where}: the image is ${part.tokens} tokens, and this model computes an image in one step, which holds ${this.wholeImageTokens} (engine.step_token_budget, engine.ubatch_size)`);
          }
          this.spans.push({ start: length, count: part.tokens, chunk: part.chunk });
          parts.push(new Int32Array(part.tokens).fill(placeholderToken(part.chunk)));
        }
        length += parts.at(-1)!.length;
      }
      parts.push(this.tokenizeRest(pieces[i + 1]!));
      length += parts.at(-1)!.length;
    });
    const tokens = concat(parts);
    // The first generated token comes from the prompt's last token's logits, which an image token has none of.
    const last = this.spans.at(-1);
    if (last && last.start + last.count === tokens.length) throw new ApiError(400, 'invalid_request_error', 'the prompt cannot end with an image');
    return tokens;
  }

  private imageParts(image: PlacedImage) {
    try {
      return this.vision.tokenize(image.bytes, image.hash);
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_IMAGE') throw err;
      const webp = image.mediaType === 'image/webp' ? ' (WebP is not read on vision models; JPEG, PNG and GIF are)' : '';
      throw new ApiError(400, 'invalid_request_error', `${image.where}: the image could not be decoded for the model${webp}`);
    }
  }

  /** Text after an image: the prompt tokenizer's tokens (it keeps recent pieces'), without the BOS it adds at a start. */
  private tokenizeRest(text: string): Int32Array {
    if (text === '') return new Int32Array(0);
    const tokens = this.textVocab.tokenizePrompt(text);
    return this.leadingBos !== undefined && tokens[0] === this.leadingBos ? tokens.subarray(1) : tokens;
  }
}
