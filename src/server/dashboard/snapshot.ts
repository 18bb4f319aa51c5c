// The dashboard's snapshot: everything one page shows, built once a second while a page is open, from the
// engine (its status words, and an inspection for each request's state and the cached prefixes), the
// request history (src/server/dashboard/history.ts) and the process. Series go out as columns, as uPlot
// takes them.
import { basename } from 'node:path';
import type { Engine } from '../../engine/engine.js';
import type { EngineInspection, InspectedPrefix } from '../../engine/inspection.js';
import { loadAddon } from '../../native.js';
import type { RecordState, RequestHistory, RequestRecord, SessionHits } from './history.js';

export interface ModelSummary {
  /** The model as the API names it. */
  id: string;
  file: string;
  /** llama.cpp's description: architecture, size class, weight type. */
  description: string;
  architecture: string;
  sizeBytes: number;
  parameters: number;
  /** Where the layers run, e.g. "CPU" or "CUDA0 (NVIDIA H200)". */
  backend: string;
  kvType: string;
  maxContext: number;
  poolCells: number;
  slots: number;
  trainedContext: number;
}

/** A request in flight: its record, with the engine's view of where it is. */
export interface LiveRequest extends RequestRecord {
  /** Prompt tokens computed so far (cached ones included). */
  prefilledTokens: number;
}

export interface DashboardSnapshot {
  at: number;
  /** loading: the model is not loaded yet; error: it failed to (`loadError` says why). */
  status: 'ok' | 'loading' | 'error';
  loadError?: string;
  model?: ModelSummary;
  engine?: { slotsBusy: number; queued: number; kvCellsUsed: number; preempted: number; promptTokens: number; cachedPromptTokens: number };
  process: { rssBytes: number; heapUsedBytes: number; uptimeSeconds: number };
  requests: LiveRequest[];
  cache: { memory: InspectedPrefix[]; disk: InspectedPrefix[]; sessions: SessionHits[] };
  recent: RequestRecord[];
  /** Columns: times in seconds since the epoch, then one array per series (null: no value). */
  series: {
    rates: { t: number[]; generated: number[]; prefilled: number[]; rssMiB: number[]; kvPercent: number[] };
    requests: { t: number[]; ttftMs: (number | null)[]; hitPercent: (number | null)[] };
  };
}

export interface SnapshotSources {
  engine(): Engine | undefined;
  loadError(): Error | undefined;
  history: RequestHistory;
  modelId: string;
  /** How long to wait for the engine's inspection before using the last one (it answers between steps). */
  inspectWaitMs?: number;
}

const NOTHING: EngineInspection = { requests: [], memoryPrefixes: [], diskPrefixes: [] };
const MIB = 1024 * 1024;

export class SnapshotBuilder {
  private inspection = NOTHING;
  private backend?: string;

  constructor(private readonly sources: SnapshotSources) {}

  async build(now = Date.now()): Promise<DashboardSnapshot> {
    const engine = this.sources.engine();
    const ready = engine?.alive === true;
    if (ready) await this.refreshInspection(engine);
    const { history } = this.sources;
    const memory = process.memoryUsage();
    const status = ready ? engine.status() : undefined;
    if (status) history.sample(now, { decodedTokens: status.decodedTokens, prefilledTokens: status.prefilledTokens, kvCellsUsed: status.kvCellsUsed, rssBytes: memory.rss });
    const loadError = this.sources.loadError();
    const poolCells = engine?.settings.poolTokens ?? 0;
    const rates = history.rateSeries();
    const points = history.requestSeries();
    return {
      at: now,
      status: ready ? 'ok' : loadError ? 'error' : 'loading',
      ...(loadError && { loadError: loadError.message }),
      ...(ready && { model: this.model(engine) }),
      ...(status && {
        engine: {
          slotsBusy: status.slotsBusy, queued: status.queued, kvCellsUsed: status.kvCellsUsed, preempted: status.preempted,
          promptTokens: status.promptTokens, cachedPromptTokens: status.cachedPromptTokens,
        },
      }),
      process: { rssBytes: memory.rss, heapUsedBytes: memory.heapUsed, uptimeSeconds: Math.round(process.uptime()) },
      requests: history.inFlight().map((record) => this.live(record)),
      cache: { memory: this.inspection.memoryPrefixes, disk: this.inspection.diskPrefixes, sessions: history.sessions() },
      recent: history.recent(),
      series: {
        rates: {
          t: rates.map((r) => r.at / 1000),
          generated: rates.map((r) => round(r.generatedPerSecond)),
          prefilled: rates.map((r) => round(r.prefilledPerSecond)),
          rssMiB: rates.map((r) => round(r.rssBytes / MIB)),
          kvPercent: rates.map((r) => (poolCells > 0 ? round((100 * r.kvCellsUsed) / poolCells) : 0)),
        },
        requests: {
          t: points.map((p) => p.at / 1000),
          ttftMs: points.map((p) => (p.ttftMs === null ? null : Math.round(p.ttftMs))),
          hitPercent: points.map((p) => (p.hitRate === null ? null : round(100 * p.hitRate))),
        },
      },
    };
  }

  /** Asks the engine what it holds; keeps the last answer when this one is slow (a long step is running). */
  private async refreshInspection(engine: Engine): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), this.sources.inspectWaitMs ?? 300)));
    const answer = await Promise.race([engine.inspect(), late]);
    clearTimeout(timer);
    if (answer) this.inspection = answer;
  }

  /** A record in flight with the engine's state for it; a token seen on this side is newer than the inspection. */
  private live(record: RequestRecord): LiveRequest {
    const inspected = record.engineId === undefined ? undefined : this.inspection.requests.find((r) => r.id === record.engineId);
    let state: RecordState = record.state;
    if (inspected && state !== 'decode') state = inspected.state;
    const promptTokens = record.promptTokens || (inspected?.promptTokens ?? 0);
    const cachedTokens = Math.max(record.cachedTokens, inspected?.cachedTokens ?? 0);
    const prefilledTokens = state === 'decode' ? promptTokens : Math.max(cachedTokens, inspected?.prefilledTokens ?? 0);
    return { ...record, state, promptTokens, cachedTokens, prefilledTokens };
  }

  private model(engine: Engine): ModelSummary {
    const { settings, model } = engine;
    return {
      id: this.sources.modelId,
      file: basename(settings.modelPath),
      description: model.description,
      architecture: model.description.split(' ')[0] ?? '',
      sizeBytes: model.sizeBytes,
      parameters: model.parameters,
      backend: (this.backend ??= backendOf(settings.gpuLayers)),
      kvType: settings.kvType,
      maxContext: settings.maxContext,
      poolCells: settings.poolTokens,
      slots: settings.slots,
      trainedContext: model.contextTrain,
    };
  }
}

/** The GPU that ggml found, when layers go to one; else the CPU. */
function backendOf(gpuLayers: number): string {
  const gpu = gpuLayers !== 0 ? loadAddon().devices().find((d) => d.type === 'gpu' || d.type === 'igpu') : undefined;
  return gpu ? `${gpu.name} (${gpu.description})` : 'CPU';
}

const round = (value: number, digits = 1): number => Math.round(value * 10 ** digits) / 10 ** digits;
