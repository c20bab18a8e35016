// Route-table scaling and control plane (`vxnet bench`, unless --no-scaling): fake peer leases of /30
// behind a third host that only counts what arrives, the 64-byte flood spread over them at 2, 3,
// 1,000 and 10,000 peers, 1,000 leases written at once timed until installed, and RSS.
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_PORT } from '../src/net/wire';
import { formatCidr, formatIPv4, parseCidr } from '../src/net/ip';
import { parseNetworkConfig, subnetAt, subnetCount } from '../src/subnet/config';
import { DEFAULT_PREFIX, encodeLeaseValue, leaseKey } from '../src/subnet/lease';
import type { NetBed } from '../src/testbed/netbed';
import type { WireLease } from './agent';
import type { FloodOptions, FloodResult } from './lib/bedtools';
import type { BenchOptions } from './lib/options';
import { type Agent, backendSection, NETWORK, type NetConf, type Overlay } from './lib/overlay';
import { processRssMB } from './lib/proc';
import { type BackendName, type BenchResult, REFERENCE, type ScalingPoint } from './lib/schema';
import { human, sig } from './lib/stats';

export interface ScalingContext {
  bed: NetBed;
  overlay: Overlay;
  /** The control agent on host 1 (absent with --direct). */
  control?: Agent;
  opts: BenchOptions;
  tmp: string;
  log(msg: string): void;
  fail(where: string, e: unknown): string;
  bestFlood(o: Omit<FloodOptions, 'seconds' | 'threads'>): Promise<FloodResult & { threads: number }>;
  /** The reference backend first. */
  order(bs: BackendName[]): BackendName[];
}

export async function runScaling(ctx: ScalingContext): Promise<NonNullable<BenchResult['scaling']>> {
  const sc: NonNullable<BenchResult['scaling']> = { subnetLen: 30, backends: {}, controlPlane: {}, rssMB10k: {} };
  for (const b of ctx.order(ctx.opts.scalingBackends)) {
    try {
      await scaleBackend(ctx, b, sc);
    } catch (e) {
      ctx.fail(`scaling ${b}`, e);
    } finally {
      await ctx.overlay.stop().catch(() => undefined);
    }
  }
  return sc;
}

async function scaleBackend(ctx: ScalingContext, b: BackendName, sc: NonNullable<BenchResult['scaling']>): Promise<void> {
  const bed = ctx.bed;
  const overlay = ctx.overlay;
  const [h1, h2, h3] = [bed.host(1), bed.host(2), bed.host(3)];
  const conf: NetConf = { Network: NETWORK, SubnetLen: 30, Backend: backendSection(b, ctx.opts.userspaceOptions) };
  const cfg = parseNetworkConfig(JSON.stringify(conf));
  ctx.log(`scaling ${b}: /30 leases, fake peers behind ${h3.name} (${h3.underlayIp}, a counting sink without daemon)`);
  await overlay.start([h1, h2], conf);
  const taken = new Set(overlay.hosts.map((h) => formatCidr(parseCidr(h.subnet, false))));
  const points: ScalingPoint[] = [];
  sc.backends[b] = points;
  // Fake leases in subnet order, skipping the two real ones.
  const fakes: Array<{ subnet: string; dst: string }> = [];
  for (let i = 0; fakes.length < 11_000 && i < subnetCount(cfg); i++) {
    const sn = subnetAt(cfg, i);
    const key = formatCidr(sn);
    if (!taken.has(key)) fakes.push({ subnet: key, dst: formatIPv4((sn.ip + 2) >>> 0) });
  }
  const fakeLease = (k: number): WireLease => {
    const mac = `02:fb:${[(k >> 16) & 255, (k >> 8) & 255, k & 255, 1].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
    const type = String(conf.Backend.Type);
    return {
      subnet: fakes[k].subnet,
      attrs: { publicIp: h3.underlayIp, backendType: type, ...(type === 'vxlan' ? { backendData: { VNI: 1, VtepMAC: mac } } : {}) },
    };
  };
  let written = 0;
  /** Adds fake leases until h1 has `peers` peers (h2 + fakes); returns [write s, install s]. */
  const grow = async (peers: number): Promise<{ installSeconds: number | null; writeSeconds: number | null; leases: number }> => {
    const from = written;
    const to = peers - 1;
    const batch = Array.from({ length: to - from }, (_, j) => fakeLease(from + j));
    written = to;
    const timeoutMs = 600_000;
    if (ctx.opts.direct) {
      const all = Array.from({ length: to }, (_, k) => fakeLease(k));
      const seconds = await overlay.setDirectPeers(all);
      return { installSeconds: seconds, writeSeconds: null, leases: batch.length };
    }
    const kvs = batch.map((l): [string, string] => [leaseKey(DEFAULT_PREFIX, parseCidr(l.subnet, true)), encodeLeaseValue(l.attrs)]);
    const r = await ctx.control!.call<{ writeSeconds: number; seconds: number; polls: number }>({
      op: 'putAndWait',
      endpoint: overlay.endpoint,
      kvs,
      subnetFile: overlay.hosts[0].subnetFile,
      wantInstalled: peers,
      timeoutMs,
      pollMs: 50,
    });
    return { installSeconds: r.seconds, writeSeconds: r.writeSeconds, leases: batch.length };
  };
  const measure = async (peers: number, installSeconds: number | null, leases: number) => {
    const dstFile = path.join(ctx.tmp, `dsts-${peers}.txt`);
    writeFileSync(dstFile, fakes.slice(0, peers - 1).map((f) => f.dst).join('\n') + '\n');
    let r: FloodResult | undefined;
    try {
      // Encapsulated traffic is counted at h3's UDP layer (GSO trains cut first); host-gw's plain
      // routed packets never reach a local socket there, and arrive one by one on eth0.
      const at = b === 'host-gw' ? { countDev: 'eth0' } : { countPort: DEFAULT_PORT[b === 'udp' ? 'udp' : 'vxlan'] };
      r = await ctx.bestFlood({ fromNs: h1.containerNs, dstFile, countNs: h3.ns, ...at });
    } catch (e) {
      ctx.fail(`scaling ${b} ${peers} peers`, e);
    }
    // The same table, traffic to the first two fake peers only (as at 3 peers): what a larger table
    // costs per packet, with the batching unchanged. The spread over every peer above also loses the
    // per-peer UDP GSO trains that one socket's batch to one peer forms.
    let two: FloodResult | undefined = peers === 3 ? r : undefined;
    if (peers > 3) {
      try {
        const twoFile = path.join(ctx.tmp, 'dsts-two.txt');
        writeFileSync(twoFile, fakes.slice(0, 2).map((f) => f.dst).join('\n') + '\n');
        const at = b === 'host-gw' ? { countDev: 'eth0' } : { countPort: DEFAULT_PORT[b === 'udp' ? 'udp' : 'vxlan'] };
        two = await ctx.bestFlood({ fromNs: h1.containerNs, dstFile: twoFile, countNs: h3.ns, ...at });
      } catch (e) {
        ctx.fail(`scaling ${b} ${peers} peers, traffic to two`, e);
      }
    }
    const rss = processRssMB(overlay.hosts[0].pid);
    const p: ScalingPoint = {
      peers,
      pps: r ? sig(r.pps) : null,
      loss: r ? sig(r.loss) : null,
      offeredPps: r ? sig(r.offeredPps) : null,
      installSeconds: installSeconds === null ? null : sig(installSeconds),
      leasesWritten: leases,
      rssMB: rss === undefined ? null : sig(rss, 3),
      ...(peers >= 3 ? { ppsTwoPeers: two ? sig(two.pps) : null, lossTwoPeers: two ? sig(two.loss) : null } : {}),
    };
    points.push(p);
    const ref = b === REFERENCE ? undefined : sc.backends[REFERENCE]?.find((q) => q.peers === peers)?.pps;
    const rs = ref ? `  ×${(p.pps! / ref).toFixed(2)} kernel-vxlan` : b === REFERENCE ? '  (reference)' : '';
    ctx.log(`  ${b}: ${peers.toLocaleString('en-US')} peers: ${human(p.pps)} pps delivered, loss ${p.loss === null ? '–' : (p.loss * 100).toFixed(1) + '%'}${rs}; RSS ${human(p.rssMB)} MB`);
    if (peers > 3) ctx.log(`  ${b}: ${peers.toLocaleString('en-US')} peers, traffic to two of them: ${human(p.ppsTwoPeers)} pps delivered, loss ${p.lossTwoPeers == null ? '–' : (p.lossTwoPeers * 100).toFixed(1) + '%'}`);
  };
  // The kernel backends program one `ip` command per entry (10,000 peers take minutes): a quick run
  // stops them at 1,000 peers.
  const kernel = b === 'kernel-vxlan' || b === 'host-gw';
  const pointsFor = ctx.opts.quick && kernel ? ctx.opts.scalingPoints.filter((n) => n <= 1000) : ctx.opts.scalingPoints;
  if (pointsFor.length < ctx.opts.scalingPoints.length) ctx.log(`  ${b}: quick run: kernel datapath scaled to ${pointsFor[pointsFor.length - 1]} peers only`);
  let controlDone = false;
  /** Exactly 1,000 leases written at once, timed until host 1 has installed all of them. */
  const controlPlane = async () => {
    controlDone = true;
    ctx.log(`  ${b}: control plane: writing 1,000 leases, timing until ${h1.name} has installed all`);
    const cp = await grow(written + 1 + 1000);
    sc.controlPlane![b] = { leases: cp.leases, seconds: cp.installSeconds === null ? null : sig(cp.installSeconds), writeSeconds: cp.writeSeconds === null ? null : sig(cp.writeSeconds) };
    ctx.log(`  ${b}: 1,000 leases installed ${cp.installSeconds?.toFixed(2)} s after the write began (write took ${cp.writeSeconds?.toFixed(2) ?? '–'} s)`);
  };
  for (const n of pointsFor) {
    if (n > 1000 && !controlDone) await controlPlane();
    ctx.log(`  ${b}: growing to ${n.toLocaleString('en-US')} peers in the route table`);
    const g = await grow(n);
    ctx.log(`  ${b}: ${g.leases.toLocaleString('en-US')} lease${g.leases === 1 ? '' : 's'} installed in ${g.installSeconds?.toFixed(2)} s`);
    await measure(n, g.installSeconds, g.leases);
    if (n === 10_000) {
      const rss = processRssMB(overlay.hosts[0].pid);
      sc.rssMB10k![b] = rss === undefined ? null : sig(rss, 3);
    }
  }
  if (!controlDone) await controlPlane();
}
