#!/usr/bin/env node
// Builds the native addon (native/) and the llama.cpp libraries it links.
//
// llama.cpp's source comes from the pinned npm package named in package.json ("pensieve.llamaCppPackage"),
// which ships it as llama/gitRelease.bundle. We fetch only that package's tarball (npm pack), never its
// prebuilt binaries, and clone the bundle into native/deps/llama.cpp (ignored by git).
//
// Switches (environment): PENSIEVE_GPU=cuda builds the CUDA backend; PENSIEVE_GPU=cpu turns Metal off on
// macOS (on by default there). The build is incremental: after a TypeScript-only change, nothing in
// llama.cpp is recompiled.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const depsDir = join(root, 'native', 'deps');
const llamaDir = join(depsDir, 'llama.cpp');
const stampFile = join(llamaDir, '.pensieve-source');
const pinned = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).pensieve.llamaCppPackage;

function run(cmd, args, opts = {}) {
  execFileSync(cmd, args, { stdio: 'inherit', ...opts });
}

function fetchLlamaSource() {
  if (existsSync(stampFile) && readFileSync(stampFile, 'utf8').trim() === pinned) return;
  console.log(`[pensieve] fetching llama.cpp source from ${pinned}`);
  rmSync(llamaDir, { recursive: true, force: true });
  mkdirSync(depsDir, { recursive: true });
  const packDir = join(depsDir, 'pack');
  rmSync(packDir, { recursive: true, force: true });
  mkdirSync(packDir);
  run('npm', ['pack', pinned, '--pack-destination', packDir, '--silent'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const tarball = readdirSync(packDir).find((f) => f.endsWith('.tgz'));
  if (!tarball) throw new Error(`npm pack ${pinned} produced no tarball`);
  run('tar', ['-xzf', join(packDir, tarball), '-C', packDir, 'package/llama/gitRelease.bundle']);
  run('git', ['clone', '--quiet', join(packDir, 'package', 'llama', 'gitRelease.bundle'), llamaDir]);
  rmSync(packDir, { recursive: true, force: true });
  writeFileSync(stampFile, pinned + '\n');
}

function buildAddon() {
  const gpu = process.env.PENSIEVE_GPU ?? '';
  const defs = [
    `--CDPENSIEVE_CUDA=${gpu === 'cuda' ? 'ON' : 'OFF'}`,
    `--CDPENSIEVE_METAL=${process.platform === 'darwin' && gpu !== 'cpu' ? 'ON' : 'OFF'}`,
  ];
  const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  run(process.execPath, [cmakeJs, 'build', '--directory', join(root, 'native'), '--out', join(root, 'build', 'native'),
    '--parallel', String(cpus().length), '--log-level', 'warn', ...defs]);
}

fetchLlamaSource();
buildAddon();
