// What the main thread's Engine (engine.ts) and the engine thread (workers/engine-thread.ts) exchange
// besides commands (types.ts): the thread's start data and its messages back.
import type { MessagePort } from 'node:worker_threads';
import type { ModelInfo, NativeContext } from '../native.js';
import type { EngineSettings } from './types.js';
import type { EngineInspection } from './inspection.js';

export interface EngineThreadData {
  settings: EngineSettings;
  commands: MessagePort;
  /** Int32 word 0 is bumped (and notified) whenever the engine has something new to look at. */
  doorbell: SharedArrayBuffer;
  /** The output bell (output-bell.ts), rung after writing into rings. */
  outputBell: SharedArrayBuffer;
  /** Int32 words updated every step, read by the main thread (see StatusWord). */
  status: SharedArrayBuffer;
}

/** Messages to the main thread. */
export type EngineThreadMessage =
  | { type: 'ready'; model: ModelInfo; context: ReturnType<NativeContext['info']> }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string }
  | { type: 'inspection'; inspection: EngineInspection };

export type EngineThreadLog = (message: string, level?: 'info' | 'warn' | 'error') => void;
