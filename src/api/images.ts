// Image blocks of a request: their bytes decoded and checked (base64, size, media type against the bytes'
// magic numbers), their pixel size read from the header where that is cheap, and what stands in their
// place in the prompt: a text note for a model that cannot see, or a marker the vision path replaces.
import { createHash } from 'node:crypto';
import type { ImageMode, PensieveConfig } from '../config.js';
import { ApiError } from './errors.js';
import type { ImageBlockParam } from './schemas.js';

export const IMAGE_MEDIA_TYPES = ['image/jpeg', 'image/png', 'image/gif', 'image/webp'] as const;
export type ImageMediaType = (typeof IMAGE_MEDIA_TYPES)[number];

export interface DecodedImage {
  mediaType: ImageMediaType;
  bytes: Buffer;
  /** Pixel size from the header; absent where the header does not say it plainly. */
  width?: number;
  height?: number;
  /** sha256 of the bytes, hex: the image's identity in the prompt cache. */
  hash: string;
}

/** What the converter puts in an image block's place: text, given the decoded image and where it was. */
export type ImageHandler = (block: ImageBlockParam, where: string) => string;

/** How a request's images are handled. */
export interface ImageOptions {
  /** On a model without a projector: noted or refused (a vision model sees them). */
  mode: ImageMode;
  /** Largest image, in decoded bytes. */
  maxBytes: number;
  /** api.fetch_image_urls: URL sources are fetched (image-urls.ts) before the request is prepared; else refused. */
  fetchUrls: boolean;
}

/** Anthropic's own limit on an image: the default where no config says otherwise. */
export const DEFAULT_IMAGE_OPTIONS: ImageOptions = { mode: 'note', maxBytes: 5 * 2 ** 20, fetchUrls: false };

const invalid = (message: string): ApiError => new ApiError(400, 'invalid_request_error', message);

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** The image's bytes, checked; anything wrong with them is a 400 that says what. */
export function decodeImage(block: ImageBlockParam, where: string, maxBytes: number): DecodedImage {
  const { source } = block;
  if (source.type === 'url') {
    throw invalid(`${where}.source: image URLs are not fetched by this server (api.fetch_image_urls is off): send the image as base64`);
  }
  if (source.type === 'file') {
    throw invalid(`${where}.source: file sources need Anthropic's Files API, which this server does not have: send the image as base64`);
  }
  const mediaType = source.media_type as ImageMediaType;
  if (!IMAGE_MEDIA_TYPES.includes(mediaType)) {
    throw invalid(`${where}.source.media_type: '${source.media_type}' is not supported: use one of ${IMAGE_MEDIA_TYPES.join(', ')}`);
  }
  // Checked before decoding: a base64 string's length bounds its bytes.
  const data = source.data.replace(/\s+/g, '');
  const approximateBytes = Math.floor((data.length * 3) / 4);
  if (approximateBytes - 2 > maxBytes) throw tooLarge(where, approximateBytes, maxBytes);
  if (data.length % 4 !== 0 || !BASE64.test(data)) throw invalid(`${where}.source.data: not valid base64`);
  const bytes = Buffer.from(data, 'base64');
  if (bytes.length === 0) throw invalid(`${where}.source.data: the image is empty (0 bytes)`);
  if (bytes.length > maxBytes) throw tooLarge(where, bytes.length, maxBytes);
  const actual = sniffMediaType(bytes);
  if (actual === undefined) throw invalid(`${where}.source.data: not a JPEG, PNG, GIF or WebP image`);
  if (actual !== mediaType) throw invalid(`${where}.source.media_type: says ${mediaType}, but the data is ${actual}`);
  return { mediaType, bytes, ...pixelSize(mediaType, bytes), hash: createHash('sha256').update(bytes).digest('hex') };
}

function tooLarge(where: string, bytes: number, maxBytes: number): ApiError {
  return invalid(`${where}.source.data: the image is ${bytes} bytes, over the limit of ${maxBytes} bytes (api.max_image_mb)`);
}

const startsWith = (bytes: Buffer, magic: number[], at = 0): boolean => magic.every((b, i) => bytes[at + i] === b);
const ascii = (text: string): number[] => [...text].map((c) => c.charCodeAt(0));

/** The media type the bytes' magic numbers say. */
export function sniffMediaType(bytes: Buffer): ImageMediaType | undefined {
  if (startsWith(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'image/png';
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return 'image/jpeg';
  if (startsWith(bytes, ascii('GIF87a')) || startsWith(bytes, ascii('GIF89a'))) return 'image/gif';
  if (startsWith(bytes, ascii('RIFF')) && startsWith(bytes, ascii('WEBP'), 8)) return 'image/webp';
  return undefined;
}

type PixelSize = { width: number; height: number } | Record<string, never>;

/** Width and height from the image's header (a truncated header gives none). */
export function pixelSize(mediaType: ImageMediaType, b: Buffer): PixelSize {
  const size = (width: number, height: number): PixelSize => (width > 0 && height > 0 ? { width, height } : {});
  try {
    switch (mediaType) {
      case 'image/png': // IHDR is the first chunk
        return size(b.readUInt32BE(16), b.readUInt32BE(20));
      case 'image/gif':
        return size(b.readUInt16LE(6), b.readUInt16LE(8));
      case 'image/webp': {
        const chunk = b.toString('latin1', 12, 16);
        if (chunk === 'VP8 ') return size(b.readUInt16LE(26) & 0x3fff, b.readUInt16LE(28) & 0x3fff);
        if (chunk === 'VP8L') {
          const bits = b.readUInt32LE(21);
          return size((bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1);
        }
        if (chunk === 'VP8X') return size(b.readUIntLE(24, 3) + 1, b.readUIntLE(27, 3) + 1);
        return {};
      }
      case 'image/jpeg':
        return jpegSize(b);
    }
  } catch {
    return {};
  }
}

/** A JPEG's size is in its start-of-frame segment, after any number of others. */
function jpegSize(b: Buffer): PixelSize {
  let at = 2;
  while (at + 9 < b.length) {
    if (b[at] !== 0xff) return {};
    const marker = b[at + 1];
    if (marker === 0xff) {
      at++; // fill byte
      continue;
    }
    // SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC)
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      const height = b.readUInt16BE(at + 5);
      const width = b.readUInt16BE(at + 7);
      return width > 0 && height > 0 ? { width, height } : {};
    }
    at += 2 + b.readUInt16BE(at + 2);
  }
  return {};
}

/** The text that stands in for an image on a model that cannot see. */
export function imageNote(image: DecodedImage): string {
  const pixels = image.width !== undefined ? `, ${image.width}x${image.height} pixels` : '';
  return `[image: ${image.mediaType}, ${image.bytes.length} bytes${pixels}; this model cannot see images, so only this note stands in for it]`;
}

/** For a model without a projector: each image checked, then noted in its place or refused. */
export function imageNotes(options: ImageOptions): ImageHandler {
  return (block, where) => {
    const image = decodeImage(block, where, options.maxBytes);
    if (options.mode === 'reject') throw invalid(`${where}: this model cannot see images (api.images = "reject")`);
    return imageNote(image);
  };
}

/** The image options of a config. */
export function imageOptionsOf(config: Pick<PensieveConfig, 'api'>): ImageOptions {
  return { mode: config.api.images, maxBytes: config.api.maxImageMb * 2 ** 20, fetchUrls: config.api.fetchImageUrls };
}
