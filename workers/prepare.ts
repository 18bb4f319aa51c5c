// A prompt-preparation worker (run by the piscina pool): renders a request with the chat template and
// tokenizes it, off the main thread. Each worker holds the model's vocabulary and chat template.
import { workerData } from 'piscina';
import { ChatRenderer } from '../src/chat/renderer.js';
import { toChatRequest } from '../src/api/convert.js';
import { ApiError } from '../src/api/errors.js';
import { imageNotes } from '../src/api/images.js';
import type { PrepareResult, PrepareTask, PrepareWorkerData } from '../src/chat/prepare-pool.js';

const { modelPath, templateFile, images } = workerData as PrepareWorkerData;
const renderer = ChatRenderer.load(modelPath, templateFile);
const imageHandler = imageNotes(images);

export default function prepare(task: PrepareTask): PrepareResult {
  try {
    const prepared = renderer.prepare(toChatRequest(task.request, imageHandler), task.maxTokens);
    return { ok: true, ...prepared };
  } catch (err) {
    // Errors cross the thread boundary as data: an ApiError keeps its status and type.
    if (err instanceof ApiError) return { ok: false, status: err.status, type: err.type, message: err.message };
    return { ok: false, status: 400, type: 'invalid_request_error', message: (err as Error).message };
  }
}
