// The issue-8 floors computed from bench results: per-run values, medians, verdicts, scaling ratios.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BenchResult, BackendResult } from '../../bench/lib/schema';
import { checkFloors, renderFloors } from '../../bench/lib/floors';
import { summarizeRuns } from '../../bench/lib/summary';

function fig(tcp1: number, tcp4: number, rtt50: number, daemonCpu: number): BackendResult {
  return { tcp1Gbps: tcp1, tcp4Gbps: tcp4, rttP50Us: rtt50, rttP99Us: rtt50 * 2, rttLoadP50Us: rtt50 * 3, rttLoadP99Us: rtt50 * 6, pps64: 200e3, pps64NoLoss: 150e3, loss64: 0.1, cpuSecPerGB: 1, rssMB: 70, daemonCpuSecPerGB: daemonCpu };
}

function run(k: number): BenchResult {
  return {
    machine: { cpus: 2 },
    backends: {
      udp: fig(8 * k, 12, 200, 0.9),
      vxlan: fig(10, 14, 150, 0.7 + k / 100),
      'kernel-vxlan': { ...fig(10, 20, 100, 0), daemonCpuSecPerGB: 0 },
      'host-gw': fig(14, 30, 50, 0),
    },
    scaling: {
      backends: {
        vxlan: [
          { peers: 2, pps: 200e3, loss: 0 },
          { peers: 3, pps: 130e3, loss: 0, ppsTwoPeers: 130e3 },
          { peers: 10000, pps: 126e3 + k, loss: 0, ppsTwoPeers: 100e3 + k },
        ],
      },
    },
  };
}

test('floors: per-run values, median, spread and verdicts', () => {
  const runs = [run(1), run(2), run(3)];
  const r = summarizeRuns(runs);
  const checks = checkFloors(r);
  const get = (id: string, b: string) => checks.find((c) => c.floor.id === id && c.backend === b)!;
  // udp TCP1 ratio per run: 8k/10 → 0.8, 1.6, 2.4
  assert.deepEqual(get('tcp1', 'udp').perRun, [0.8, 1.6, 2.4]);
  assert.equal(get('tcp1', 'udp').spread?.median, 1.6);
  assert.equal(get('tcp1', 'udp').met, true);
  // vxlan 14/10 = 1.4 own-stream ratio every run: meets 1.3
  assert.equal(get('tcp4own', 'vxlan').met, true);
  // udp 12 / 8k: 1.5, 0.75, 0.5: median 0.75 < 1.3, one run of three meets it
  assert.equal(get('tcp4own', 'udp').met, false);
  assert.equal(get('tcp4own', 'udp').runsMet, 1);
  // RTT p50 ratio 200/100 = 2: "at most 2" is met at equality
  assert.equal(get('rttP50', 'udp').met, true);
  // daemon CPU is absolute: udp 0.9 > 0.8, vxlan 0.71..0.73 ≤ 0.8
  assert.equal(get('daemonCpu', 'udp').met, false);
  assert.equal(get('daemonCpu', 'vxlan').met, true);
  // scaling: the same traffic (two peers) with 10k vs 3 in the table; udp has no scaling points → no verdict
  assert.ok(Math.abs(get('scaling', 'vxlan').spread!.median - (100e3 + 2) / 130e3) < 1e-12);
  assert.equal(get('scaling', 'vxlan').met, false);
  assert.equal(get('scaling', 'udp').met, null);
  // the comparison rows: traffic spread over the whole table
  assert.ok(Math.abs(get('scalingAll', 'vxlan').spread!.median - (126e3 + 2) / 130e3) < 1e-12);
  assert.equal(get('scaling2', 'vxlan').met, false);
});

test('floors table renders every floor, n/a where a figure is missing, and no verdict for comparison rows', () => {
  const md = renderFloors(summarizeRuns([run(1), run(2), run(3)]));
  const rows = md.split('\n');
  assert.equal(rows.length, 2 + 12);
  // No relay figures in these runs: its comparison row says so.
  assert.match(md, /RTT p50 of the minimal relay.*\| n\/a \| n\/a \| — \|/);
  assert.match(md, /TCP 1 stream ≥ 0\.5× \| 1\.60 \[0\.80–2\.40\] \(3\/3 runs\) \| 1\.00 \[1\.00–1\.00\] \(3\/3 runs\) \| udp yes, vxlan yes \|/);
  assert.match(md, /route lookup flat.*\| n\/a \| 0\.77 \[0\.77–0\.77\] \(0\/3 runs\) \| udp n\/a, vxlan no \|/);
  assert.match(md, /spread over all 10,000 peers vs over the 2.*\| n\/a \| 0\.97 \[0\.97–0\.97\] \(3\/3 runs\) \| — \|/);
  assert.match(md, /\(for comparison\).*\| — \|$/m);
  // A single run (no `runs`) is judged on its own figures.
  const one = renderFloors(run(1));
  assert.match(one, /TCP 1 stream ≥ 0\.5× \| 0\.80 \| 1\.00 \| udp yes, vxlan yes \|/);
});

test('the minimal relay row: its RTT p50 over the same run\'s kernel-vxlan RTT p50, per run, in both columns', () => {
  const runs: BenchResult[] = [run(1), run(2), run(3)].map((r, i) => ({ ...r, relay: { rttP50Us: [250, 210, 300][i], rttP99Us: 900, errors: [] } }));
  // A run whose relay could not be measured has no value, not a zero.
  runs.push({ ...run(4), relay: { rttP50Us: null, rttP99Us: null, errors: ['minimal relay: RTT: no replies'] } });
  const r = summarizeRuns(runs);
  assert.deepEqual(r.relay, { rttP50Us: 250, rttP99Us: 900, errors: ['minimal relay: RTT: no replies'] });
  const checks = checkFloors(r).filter((c) => c.floor.id === 'rttP50relay');
  assert.deepEqual(checks.map((c) => c.perRun), [
    [2.5, 2.1, 3, null],
    [2.5, 2.1, 3, null],
  ]);
  assert.equal(checks[0].spread?.median, 2.5);
  assert.match(renderFloors(r), /RTT p50 of the minimal relay.*\| 2\.50 \[2\.10–3\.00\] \(0\/3 runs\) \| 2\.50 \[2\.10–3\.00\] \(0\/3 runs\) \| — \|/);
});
