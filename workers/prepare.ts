// A prompt-preparation worker (run by the piscina pool): renders a request with the chat template and
// tokenizes it, off the main thread. Each worker holds the model's vocabulary and chat template, and for a
// vision model its projector (shared with the engine thread), which decodes and sizes the images.
import { workerData } from 'piscina';
import { ChatRenderer, type PreparedChat } from '../src/chat/renderer.js';
import { VisionRenderer } from '../src/chat/vision-renderer.js';
import { toChatRequest } from '../src/api/convert.js';
import { ApiError } from '../src/api/errors.js';
import { imageNotes } from '../src/api/images.js';
import type { PrepareResult, PrepareTask, PrepareWorkerData } from '../src/chat/prepare-pool.js';

const { modelPath, templateFile, images, vision } = workerData as PrepareWorkerData;

const prepareRequest: (task: PrepareTask) => PreparedChat = vision
  ? (() => {
      const renderer = VisionRenderer.loadWithProjector(modelPath, vision, templateFile);
      return (task) => {
        const marked = renderer.imageHandler(images.maxBytes);
        return renderer.prepareWithImages(toChatRequest(task.request, marked.handler), marked.images, task.maxTokens);
      };
    })()
  : (() => {
      const renderer = ChatRenderer.load(modelPath, templateFile);
      const imageHandler = imageNotes(images);
      return (task) => renderer.prepare(toChatRequest(task.request, imageHandler), task.maxTokens);
    })();

export default function prepare(task: PrepareTask): PrepareResult {
  try {
    return { ok: true, ...prepareRequest(task) };
  } catch (err) {
    // Errors cross the thread boundary as data: an ApiError keeps its status and type.
    if (err instanceof ApiError) return { ok: false, status: err.status, type: err.type, message: err.message };
    return { ok: false, status: 400, type: 'invalid_request_error', message: (err as Error).message };
  }
}
