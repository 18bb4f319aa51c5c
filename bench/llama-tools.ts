// Builds llama.cpp's own tools (llama-batched-bench, llama-server, ...) from the same pinned source our addon
// links, so a benchmark compares engines and not llama.cpp versions. Plain cmake, not cmake-js: these are
// ordinary executables. The build is incremental: a second call only asks cmake to check it is up to date.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from bench/ or dist/bench/). */
export const repoRoot = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root');
    dir = up;
  }
  return dir;
})();

export const llamaSourceDir = join(repoRoot, 'native', 'deps', 'llama.cpp');
// The same GPU switch as the addon's build (scripts/build-native.mjs): PENSIEVE_GPU=cuda adds llama.cpp's CUDA
// backend, in a build folder of its own so that the CPU build stays as it is.
const cuda = process.env.PENSIEVE_GPU === 'cuda';
const buildDir = join(repoRoot, 'bench', '.work', cuda ? 'llama-build-cuda' : 'llama-build');

// Same CPU tuning as native/CMakeLists.txt; everything that would download at build time is off (the
// machine may be offline): OpenSSL/BoringSSL, the prebuilt web UI, the npm UI build.
const configureFlags = [
  '-DCMAKE_BUILD_TYPE=Release',
  '-DGGML_NATIVE=ON',
  '-DBUILD_SHARED_LIBS=OFF',
  '-DLLAMA_BUILD_TESTS=OFF',
  '-DLLAMA_BUILD_EXAMPLES=OFF',
  '-DLLAMA_BUILD_APP=OFF',
  '-DLLAMA_OPENSSL=OFF',
  '-DLLAMA_BUILD_TOOLS=ON',
  '-DLLAMA_BUILD_SERVER=ON',
  '-DLLAMA_BUILD_UI=OFF',
  '-DLLAMA_USE_PREBUILT_UI=OFF',
  `-DGGML_CUDA=${cuda ? 'ON' : 'OFF'}`,
];

/** Builds the given llama.cpp targets (e.g. 'llama-batched-bench') and returns the directory of their binaries. */
export function buildLlamaTools(targets: string[]): string {
  if (!existsSync(join(llamaSourceDir, 'CMakeLists.txt'))) {
    throw new Error(`llama.cpp source not found at ${llamaSourceDir}; run \`npm run build:native\` first`);
  }
  const binDir = join(buildDir, 'bin');
  // Configure once; afterwards `cmake --build` re-runs configuration by itself when CMakeLists change.
  if (!existsSync(join(buildDir, 'CMakeCache.txt'))) {
    execFileSync('cmake', ['-S', llamaSourceDir, '-B', buildDir, ...configureFlags], { stdio: 'inherit' });
  }
  execFileSync('cmake', ['--build', buildDir, '--config', 'Release', '--target', ...targets, '-j', String(cpus().length)], {
    stdio: 'inherit',
  });
  for (const target of targets) {
    if (!existsSync(join(binDir, target))) throw new Error(`built ${target} but ${join(binDir, target)} is missing`);
  }
  return resolve(binDir);
}
