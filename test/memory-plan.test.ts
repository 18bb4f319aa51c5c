// The memory plan's arithmetic on model shapes given as numbers: KV bytes per type, sliding-window
// layers, the budget on a CPU and on a GPU, the KV type that "auto" picks, the pool's rounding, the
// refusals and the rendering. Expected figures are worked out here by hand from the shapes.
import t from 'tap';
import {
  kvBytesPerToken,
  kvCacheBytes,
  kvRowBytes,
  kvTypeUsable,
  machineFrom,
  MemoryPlanError,
  planMemory,
  renderPlan,
  swaCells,
  type KvShape,
  type Machine,
  type PlanEngine,
  type PlanInput,
} from '../src/model/memory-plan.js';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

/** `layers` layers of `kvHeads` heads of `headDim`; `swa(il)` marks sliding-window layers. */
function shape(layers: number, kvHeads: number, headDim: number, opts: { heads?: number; swa?: (il: number) => boolean; window?: number } = {}): KvShape {
  return {
    layers: Array.from({ length: layers }, (_, il) => ({
      kvHeads,
      heads: opts.heads ?? kvHeads,
      keyLength: headDim,
      valueLength: headDim,
      swa: opts.swa?.(il) ?? false,
    })),
    slidingWindow: opts.window ?? 0,
  };
}

// Published shapes (config.json): Phi-3-mini-128k has no GQA, Llama-3.1-8B 8 KV heads, gpt-oss-20b
// alternates sliding-window (128 tokens) and full layers, starting with a sliding one.
const PHI3 = shape(32, 32, 96);
const LLAMA31 = shape(32, 8, 128, { heads: 32 });
const GPT_OSS = shape(24, 8, 64, { heads: 64, swa: (il) => il % 2 === 0, window: 128 });
const PHI3_FILE = 2.39e9;

const cpu = (gib: number): Machine => ({ memoryBytes: gib * GIB, gpus: [] });
const gpu = (freeGib: number, ramGib = 16): Machine => ({ memoryBytes: ramGib * GIB, gpus: [{ name: 'Test GPU', freeBytes: freeGib * GIB }] });
const ENGINE: PlanEngine = { slots: 4, maxContext: 0, poolTokens: 0, kvType: 'auto', ubatchSize: 512, flashAttention: 'auto' };

function input(kv: KvShape, machine: Machine, engine: Partial<PlanEngine> = {}, more: Partial<PlanInput> = {}): PlanInput {
  return { model: { path: 'm.gguf', fileBytes: PHI3_FILE, trainedContext: 131072, kv }, engine: { ...ENGINE, ...engine }, gpuLayers: -1, machine, ...more };
}

t.test('KV bytes per token: f16 2 bytes an element, q8_0 34 and q4_0 18 bytes a block of 32', async (t) => {
  t.equal(kvBytesPerToken(PHI3, 'f16'), 32 * 32 * (96 + 96) * 2, 'phi-3: 384 KiB');
  t.equal(kvBytesPerToken(PHI3, 'f16'), 384 * 1024);
  t.equal(kvBytesPerToken(PHI3, 'q8_0'), 32 * 2 * ((32 * 96) / 32) * 34);
  t.equal(kvBytesPerToken(PHI3, 'q4_0'), 32 * 2 * ((32 * 96) / 32) * 18, 'phi-3: 108 KiB');
  t.equal(kvBytesPerToken(LLAMA31, 'f16'), 128 * 1024, 'GQA: 8 KV heads of 128');
  t.equal(kvBytesPerToken(LLAMA31, 'q8_0'), 32 * 2 * 32 * 34);
  t.equal(kvRowBytes(64, 'q4_0'), 36);
  t.throws(() => kvRowBytes(80, 'q8_0'), MemoryPlanError, 'a row of 80 is not whole blocks');

  const mixed: KvShape = { layers: [...shape(1, 4, 128).layers, { kvHeads: 0, heads: 0, keyLength: 0, valueLength: 0, swa: false }], slidingWindow: 0 };
  t.equal(kvBytesPerToken(mixed, 'f16'), 4 * 256 * 2, 'a layer without KV heads (recurrent) costs nothing');

  const head80 = shape(2, 4, 80);
  t.ok(kvTypeUsable(head80, 'f16'));
  t.notOk(kvTypeUsable(head80, 'q8_0'), 'head size 80 is not a multiple of 32');
  t.throws(() => planMemory(input(head80, cpu(16), { kvType: 'q8_0' })), { name: 'MemoryPlanError', message: /multiples of 32/ });
  t.equal(planMemory(input(head80, cpu(16))).kvType, 'f16', 'auto keeps to the types llama.cpp accepts');
});

t.test('sliding-window layers hold the window x slots + ubatch, not the pool', async (t) => {
  // 12 full layers: 8 x (64 + 64) x 2 bytes each per cell.
  t.equal(kvBytesPerToken(GPT_OSS, 'f16'), 12 * 8 * 128 * 2);
  // 128 x 4 slots + 512 = 1024 cells in each of the 12 sliding layers.
  t.equal(swaCells(GPT_OSS, 131072, 4, 512), 1024);
  t.equal(swaCells(GPT_OSS, 131072, 1, 512), 768, '128 + 512 padded to 256');
  t.equal(swaCells(GPT_OSS, 512, 4, 512), 512, 'never more than the pool');
  const full = 12 * 8 * 128 * 2 * 131072;
  const sliding = 12 * 8 * 128 * 2 * 1024;
  t.equal(kvCacheBytes(GPT_OSS, 'f16', { poolTokens: 131072, slots: 4, ubatch: 512 }), full + sliding);
  t.equal(kvCacheBytes(GPT_OSS, 'q8_0', { poolTokens: 131072, slots: 4, ubatch: 512 }), ((full + sliding) / 256) * 136, 'q8_0: 34/64 of f16');
  t.equal(kvCacheBytes(LLAMA31, 'f16', { poolTokens: 1000, slots: 4, ubatch: 512 }), 128 * 1024 * 1024, 'the pool is padded to 256 as llama.cpp pads n_ctx');

  // On 16 GiB, gpt-oss (12.1 GB) gets a pool far larger than if every layer held the pool's cells.
  const plan = planMemory(input(GPT_OSS, cpu(24), {}, { model: { path: 'g.gguf', fileBytes: 12.1e9, trainedContext: 131072, kv: GPT_OSS } }));
  t.equal(plan.kvType, 'f16');
  t.equal(plan.kvBytesPerToken, 24576);
  t.equal(plan.kvBytes, 24576 * plan.poolTokens + sliding);
});

t.test('auto: the most precise type with which one session reaches 100k tokens', async (t) => {
  // Phi-3 (2.39 GB) on 16 GiB: 16 - 2 (reserve) - 2.39e9 - 0.5 (margin) = 12,105,514,624 bytes for KV:
  // 30.7k tokens of f16, 57.9k of q8_0, 109.4k of q4_0.
  const budget = 16 * GIB - 2 * GIB - PHI3_FILE - 512 * MIB;
  const p16 = planMemory(input(PHI3, cpu(16)));
  t.equal(p16.budgetBytes, budget);
  t.equal(p16.kvType, 'q4_0');
  t.equal(p16.poolTokens, Math.floor(budget / 110592 / 256) * 256);
  t.equal(p16.poolTokens, 109312);
  t.equal(p16.maxContext, 109312, 'one session reaches 100k tokens on 16 GiB');
  t.equal(p16.sessionsAt32k, 3);
  t.ok(p16.fits);
  t.equal(p16.device, 'cpu');
  t.equal(p16.reserveBytes, 2 * GIB);

  // 32 GiB: 4 GiB kept; q8_0 reaches 100k (129.8k), f16 does not (69k).
  const p32 = planMemory(input(PHI3, cpu(32)));
  t.equal(p32.kvType, 'q8_0');
  t.equal(p32.reserveBytes, 4 * GIB, 'an eighth of RAM');
  t.equal(p32.poolTokens, Math.floor((32 * GIB - 4 * GIB - PHI3_FILE - 512 * MIB) / 208896 / 256) * 256);
  // 64 GiB: f16 reaches 100k.
  const p64 = planMemory(input(PHI3, cpu(64)));
  t.equal(p64.kvType, 'f16');
  t.ok(p64.maxContext >= 100_000 && p64.maxContext <= 131072);

  // A shorter target lowers the goal: with max_context = 16384, f16 is enough on 16 GiB.
  const short = planMemory(input(PHI3, cpu(16), { maxContext: 16384 }));
  t.equal(short.kvType, 'f16');
  t.equal(short.maxContext, 16384);
  t.equal(short.poolTokens, Math.floor(budget / 393216 / 256) * 256, 'the pool still takes what memory holds, up to 4 x 16384');
  t.equal(short.sessionsAt32k, 0, 'no session may reach 32k');

  // Nothing reaches the goal: q4_0.
  t.equal(planMemory(input(PHI3, cpu(8))).kvType, 'q4_0');
  // An explicit type is kept even when another would reach further.
  const f16 = planMemory(input(PHI3, cpu(16), { kvType: 'f16' }));
  t.equal(f16.kvType, 'f16');
  t.equal(f16.poolTokens, Math.floor(budget / 393216 / 256) * 256);
  t.equal(f16.maxContext, 30720);

  // Flash attention off: V cannot be quantized, and KQ scratch counts with each cell.
  const off = planMemory(input(PHI3, cpu(16), { flashAttention: 'off' }));
  t.equal(off.kvType, 'f16');
  t.equal(off.poolTokens, Math.floor(budget / (393216 + 512 * 32 * 4) / 256) * 256);
  t.equal(off.marginBytes, 512 * MIB + 512 * 32 * 4 * off.poolTokens);
  t.throws(() => planMemory(input(PHI3, cpu(16), { kvType: 'q4_0', flashAttention: 'off' })), { message: /needs flash attention/ });
});

t.test('the budget: RAM less a reserve on the CPU, the free memory of the GPU that holds the layers', async (t) => {
  const llama = (machine: Machine, more: Partial<PlanInput> = {}) =>
    planMemory(input(LLAMA31, machine, {}, { model: { path: 'l.gguf', fileBytes: 4.92e9, trainedContext: 131072, kv: LLAMA31 }, ...more }));
  const onGpu = llama(gpu(24));
  t.equal(onGpu.device, 'Test GPU');
  t.equal(onGpu.reserveBytes, 0, 'no reserve on a GPU');
  t.equal(onGpu.marginBytes, 512 * MIB, 'at least 512 MiB (a tenth of the weights is less)');
  t.equal(onGpu.budgetBytes, 24 * GIB - 4.92e9 - 512 * MIB);
  t.equal(onGpu.kvType, 'f16');
  t.equal(onGpu.poolTokens, Math.min(4 * 131072, Math.floor((24 * GIB - 4.92e9 - 512 * MIB) / 131072 / 256) * 256));
  t.equal(onGpu.maxContext, 131072);

  t.equal(llama(gpu(24), { gpuLayers: 0 }).device, 'cpu', 'gpu_layers = 0: the CPU plans, whatever the GPU');
  t.equal(llama(gpu(80)).poolTokens, 4 * 131072, 'at most slots x the trained context');
  t.equal(llama(gpu(80)).sessionsAt32k, 4, 'capped by the slots');

  // 17 of 33 (32 layers + output): layers 16..31 and their KV on the GPU, 17/33 of the weights.
  const split = planMemory(
    input(LLAMA31, gpu(4, 64), { kvType: 'f16' }, { model: { path: 'l.gguf', fileBytes: 4.92e9, trainedContext: 131072, kv: LLAMA31 }, gpuLayers: 17 }),
  );
  t.equal(split.device, 'Test GPU');
  t.equal(split.share, '17 of 33 layers');
  t.equal(split.weightsBytes, Math.round((4.92e9 * 17) / 33));
  t.equal(split.kvBytesPerToken, 16 * 8 * 256 * 2, 'the KV of the 16 layers there');
  t.equal(split.poolTokens, Math.floor((4 * GIB - Math.round((4.92e9 * 17) / 33) - 512 * MIB) / (16 * 8 * 256 * 2) / 256) * 256);
  const ramBound = llama(gpu(80, 8), { gpuLayers: 17 });
  t.equal(ramBound.device, 'cpu', 'the RAM bounds the pool when the CPU side is the tighter');
  t.equal(ramBound.share, '16 of 33 layers');

  const machine = machineFrom(
    [
      { name: 'CPU', description: 'x86', type: 'cpu', free: 1, total: 2 },
      { name: 'iGPU', description: 'integrated', type: 'igpu', free: 3, total: 4 },
      { name: 'CUDA0', description: 'NVIDIA H200', type: 'gpu', free: 5, total: 6 },
    ],
    7,
  );
  t.same(machine, { memoryBytes: 7, gpus: [{ name: 'NVIDIA H200', freeBytes: 5 }] }, 'integrated GPUs only without a discrete one');
  t.same(machineFrom([{ name: 'Metal', description: 'Apple M3', type: 'igpu', free: 3, total: 4 }], 7).gpus, [{ name: 'Apple M3', freeBytes: 3 }]);
  t.same(machineFrom([{ name: 'CPU', description: 'x86', type: 'cpu', free: 1, total: 2 }], 7).gpus, []);
});

t.test('the pool: multiples of 256, a given size kept, refusals with advice', async (t) => {
  for (const ram of [12, 16, 20, 48]) {
    const p = planMemory(input(LLAMA31, cpu(ram), { kvType: 'f16', maxContext: 40000 }));
    t.equal(p.poolTokens % 256, 0, `${ram} GiB: ${p.poolTokens}`);
    t.ok(p.poolTokens <= 4 * 40000 + 255);
    t.equal(p.maxContext, Math.min(40000, p.poolTokens));
  }
  // A small target: the pool rounds up to 256 rather than cut the context.
  const tiny = planMemory(input(LLAMA31, cpu(16), { slots: 1, maxContext: 1000 }));
  t.equal(tiny.poolTokens, 1024);
  t.equal(tiny.maxContext, 1000);

  const given = planMemory(input(PHI3, cpu(16), { poolTokens: 20000 }));
  t.equal(given.poolTokens, 20000);
  t.equal(given.kvType, 'f16', 'a given pool that fits in f16 keeps f16 (no type makes it reach 100k)');
  t.equal(given.maxContext, 20000);
  t.ok(given.fits);
  const tooBig = planMemory(input(PHI3, cpu(16), { poolTokens: 60000, kvType: 'f16' }));
  t.notOk(tooBig.fits);
  t.match(tooBig.advice, /m\.gguf needs about .* GiB of memory for a pool of 60000 tokens of f16 KV cache, but this machine has 14\.0 GiB/);
  t.match(tooBig.advice, /weights 2\.2 GiB \+ KV cache 22\.0 GiB \(384 KiB per token\) \+ margin 0\.5 GiB/);
  // 60000 cells of q8_0 (11.7 GiB) do not fit either: q4_0 is the type to suggest.
  t.match(tooBig.advice, /Try engine\.pool_tokens = 0 \(sizes the pool to this memory: about 30720 tokens\), or engine\.kv_type = "q4_0" \(the same pool in less memory\)/);
  t.match(tooBig.advice, /model\.check_memory = false skips this check/);

  // Explicit f16 on 8 GiB: 8 - 2 - 2.39e9 - 0.5 leaves 3.3 GiB, 8.9k cells: over the floor of 8192.
  t.ok(planMemory(input(PHI3, cpu(8), { kvType: 'f16' })).fits);
  const small = planMemory(input(PHI3, cpu(6), { kvType: 'f16' }));
  // 6 GiB: 1.3 GiB for KV, 3.3k cells of f16, 6.5k of q8_0, 12.3k of q4_0.
  t.notOk(small.fits, '6 GiB: under 8192 cells of f16');
  t.equal(small.poolTokens, 8192, 'the floor is what was asked for');
  t.match(small.advice, /Try engine\.kv_type = "q4_0": in a config file, or as PENSIEVE_ENGINE_POOL_TOKENS \/ PENSIEVE_ENGINE_KV_TYPE\./);
  // 5 GiB: 5 - 2 - 2.39e9 - 0.5 = 0.27 GiB, 2.6k cells of q4_0.
  const auto = planMemory(input(PHI3, cpu(5)));
  t.notOk(auto.fits, '5 GiB: not even 8192 cells of q4_0');
  t.equal(auto.kvType, 'q4_0');
  t.match(auto.advice, /Try engine\.pool_tokens = 2560 with engine\.kv_type = "q4_0" \(no context longer than that\)/);

  const huge = planMemory(input(PHI3, cpu(4.5)));
  t.notOk(huge.fits);
  t.match(huge.advice, /The weights alone do not fit: use a smaller model or a smaller quantization\./);
  const manyHeads = shape(1000, 1000, 128);
  t.match(planMemory(input(manyHeads, cpu(16))).advice, /Not even 256 tokens of q4_0 KV cache fit beside the weights/, 'the KV, not the weights');
  const hugeGpu = planMemory(input(PHI3, gpu(2)));
  t.match(hugeGpu.advice, /needs about .* GiB of GPU memory .* but Test GPU has 2\.0 GiB free/);
  t.match(hugeGpu.advice, /put fewer layers on the GPU \(model\.gpu_layers\)/);
});

t.test('the rendering names the key numbers', async (t) => {
  const text = renderPlan(planMemory(input(PHI3, cpu(16))));
  t.match(text, /^memory plan: CPU, 16\.0 GiB of RAM \(2\.0 GiB kept for the system\): /);
  t.match(text, /weights 2\.2 GiB \+ KV cache 11\.3 GiB \(q4_0, a pool of 109312 tokens shared by 4 slots\) \+ margin 0\.5 GiB\./);
  t.match(text, /One session can grow to 109312 tokens; 3 sessions of 32768 tokens fit at once\.$/);
  t.notMatch(text, /\n/, 'one line');
  const capped = renderPlan(planMemory(input(LLAMA31, gpu(80), { maxContext: 65536, slots: 2, poolTokens: 200000 })));
  t.match(capped, /^memory plan: GPU Test GPU, 80\.0 GiB free: /);
  t.match(capped, /One session can grow to 65536 tokens \(engine\.max_context\); 2 sessions of 32768 tokens fit at once\./);
  const trained = renderPlan(planMemory(input(LLAMA31, gpu(80), { slots: 1 }, { model: { path: 'q.gguf', fileBytes: 4e9, trainedContext: 32768, kv: LLAMA31 } })));
  t.match(trained, /a pool of 32768 tokens shared by 1 slots/);
  t.notMatch(trained, /trained context/, 'not bounded by the target when the pool is the target');
  const single = renderPlan(planMemory(input(LLAMA31, gpu(80), { slots: 2, poolTokens: 49152 }, { model: { path: 'q.gguf', fileBytes: 4e9, trainedContext: 40960, kv: LLAMA31 } })));
  t.match(single, /One session can grow to 40960 tokens \(the model's trained context\); 1 session of 32768 tokens fits at once\./);
});
