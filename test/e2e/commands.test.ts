// The README's user-facing commands end to end: the demo (first command) and a short `vxnet bench`
// smoke run. Only that they run, clean up and produce well-formed output is checked: no figure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { listNamespaces } from '../../src/testbed/cleanup';
import { ownerOf } from '../../src/testbed/naming';
import { validateResult } from '../../bench/lib/schema';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'src', 'cli.js');

/** Namespaces whose generated name says process `pid` created them. */
function ownNamespaces(pid: number): string[] {
  return listNamespaces().filter((n) => ownerOf(n)?.pid === pid);
}

test('npm run demo: three hosts, cross-host traffic, status, teardown, exit 0', { timeout: 240_000 }, () => {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'src', 'demo.js'), '--backend', 'udp'], { encoding: 'utf8', timeout: 200_000 });
  assert.equal(r.status, 0, `demo failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /every daemon has every peer installed/);
  assert.equal((r.stdout.match(/3\/3 replies/g) ?? []).length, 6, 'six container pairs ping');
  assert.match(r.stdout, /iperf3 TCP h1c -> h2c: [0-9.]+ Gbit\/s/);
  assert.match(r.stdout, /lease\s+10\.244\.\d+\.0\/24\s+held/);
  assert.match(r.stdout, /docker-opts on h1: --bip=10\.244\.\d+\.1\/24 (--ip-masq=false )?--mtu=1472/);
  assert.deepEqual(ownNamespaces(r.pid ?? 0), [], 'no namespaces left behind');
});

test('vxnet bench --quick (one backend): runs, writes a schema-valid JSON and SVG, cleans up', { timeout: 300_000 }, (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vxnet-bench-smoke-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const json = path.join(dir, 'bench.json');
  const r = spawnSync(process.execPath, [CLI, 'bench', '--quick', '--backends', 'host-gw', '--no-scaling', '--no-micro', '--seconds', '1', '--tag', 'smoke', '--json', json], {
    encoding: 'utf8',
    timeout: 280_000,
  });
  assert.equal(r.status, 0, `bench failed:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
  const doc = JSON.parse(readFileSync(json, 'utf8')) as { backends: Record<string, Record<string, unknown>> };
  assert.deepEqual(validateResult(doc), []);
  const hg = doc.backends['host-gw'];
  for (const k of ['tcp1Gbps', 'tcp4Gbps', 'rttP50Us', 'rttP99Us', 'rttLoadP50Us', 'rttLoadP99Us', 'pps64', 'pps64NoLoss', 'loss64', 'cpuSecPerGB', 'rssMB', 'daemonCpuSecPerGB']) {
    assert.equal(typeof hg[k], 'number', `host-gw.${k} measured`);
  }
  // The zero-loss search kept its paced trials, each with the requested and the achieved rate.
  const trials = (hg.noLoss64 as { trials?: Array<Record<string, unknown>> } | undefined)?.trials ?? [];
  assert.ok(trials.length >= 1, 'zero-loss trials recorded');
  for (const t of trials) for (const k of ['requestedPps', 'offeredPps', 'sent', 'delivered', 'loss']) assert.equal(typeof t[k], 'number', `trial.${k}`);
  assert.ok(existsSync(json.replace(/\.json$/, '.svg')), 'chart rendered');
  assert.match(readFileSync(json.replace(/\.json$/, '.svg'), 'utf8'), /^<svg[\s>]/);
  assert.deepEqual(ownNamespaces(r.pid ?? 0), [], 'no namespaces left behind');
});
