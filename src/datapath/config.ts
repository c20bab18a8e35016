// The datapath's configuration: its shapes, their validation, and the native options they become.
// The numeric limits and defaults are the addon's (native/options.h, exported as `addon.options`);
// this module checks a user's configuration against them so that errors name the field.
import { statSync } from 'node:fs';
import os from 'node:os';
import { addon, type NativeDatapathOptions, type NativeOptionSpec } from './native';
import { Cidr, cidrContains, cidrCovers, formatCidr, parseIPv4, parseMac } from '../net/ip';
import { DEFAULT_PORT, type Encap as EncapKind } from '../net/wire';

export interface DatapathConfig {
  encap: EncapKind;
  /** TUN device name (at most 15 characters). */
  tunName: string;
  /** MTU of the TUN (the overlay MTU). */
  mtu: number;
  /** The whole overlay network: routed into the TUN. */
  network: Cidr;
  /** Our own lease: inner destinations of received packets must fall inside it. */
  localSubnet: Cidr;
  port?: number;
  /** Underlay address to bind the UDP socket to (default: any). */
  bindAddress?: string;
  vni?: number;
  /** Our VTEP MAC (vxlan). */
  vtepMac?: string;
  /** Worker threads, each with its own TUN queue and UDP sockets, serving both directions (default: one per core, at most 16). */
  queues?: number;
  batch?: number;
  /**
   * Microseconds a worker keeps polling without sleeping after its last packet (default 50, 0 =
   * never): a reply arriving within it is handled without a thread wake-up. Bounded CPU per burst.
   */
  busyPollUs?: number;
  /**
   * Scheduler slice the workers request, in µs (EEVDF, Linux >= 6.12; default 100, 0 = the
   * kernel's): a worker woken by a packet preempts a CPU-bound task at once instead of after its slice.
   * With CPU-local steering the light lanes' threads request it, the bulk lanes' three times it.
   */
  sliceUs?: number;
  /**
   * Packets each TUN queue holds until its worker reads them (the device's txqueuelen; default
   * 4096, the kernel's TUN default is 500): what absorbs a worker's scheduling delay without loss.
   */
  tunQueueLen?: number;
  /**
   * Keep each flow on one CPU (default true; with one worker, or more workers than CPUs, it does
   * nothing: stats().offload.cpuLocal says whether it is in effect): worker q runs only
   * on the q-th CPU the process may use, a new flow goes to the worker of the CPU that received
   * its first datagram or sent its first packet into the TUN, where it stays while active. A round
   * trip then wakes no thread on another CPU. Each worker then has a light and a bulk lane (a
   * thread, a TUN queue and a receiving socket each; stats().lanes): a flow whose bursts pass 32
   * packets moves to a bulk lane at both ends, so a ping or a request does not wait behind a
   * bulk transfer (docs/datapath.md, "CPU-local steering" and "Under bulk load"). The spread over
   * workers comes from where senders run, from the underlay's receive spread (NIC RSS or RPS by
   * the outer ports, which still carry the flow hash) and, for bulk flows, from the receiving
   * side: a flow turning bulk there takes the least loaded worker's bulk lane (docs/datapath.md,
   * "One sender's streams"). On a single-queue NIC without RPS every light datagram lands on one
   * worker, as in the kernel's own vxlan path. False: workers float, flows
   * spread by their hash (one peer's flows over all workers at both ends).
   */
  cpuLocal?: boolean;
  icmpPerSec?: number;
}

/**
 * A datapath with no network of its own: the UDP port, sockets and workers only (VXLAN), serving
 * the networks added with Datapath.addNetwork(). Fields as in DatapathConfig.
 */
export interface PortConfig {
  encap?: 'vxlan';
  port?: number;
  bindAddress?: string;
  queues?: number;
  batch?: number;
  busyPollUs?: number;
  sliceUs?: number;
  tunQueueLen?: number;
  cpuLocal?: boolean;
  icmpPerSec?: number;
}

/**
 * One network of several on a datapath's UDP port (VXLAN): received frames are demultiplexed by
 * VNI onto it, validated against its own peers only, and written into its own TUN; what its TUN
 * hands over is encapsulated with its VNI towards its own peers.
 */
export interface NetworkConfig {
  /** VXLAN network identifier, 0..16777215; unique among the datapath's networks. */
  vni: number;
  /** TUN device name (1-15 characters of [A-Za-z0-9_.-]); must not exist yet in its namespace. */
  tunName: string;
  /**
   * The network namespace the TUN is created and configured in, as a path (an nsfs bind mount
   * such as /run/netns/NAME or /run/vxnet/netns/NAME, or /proc/PID/ns/net). Default: the
   * datapath's own namespace. The namespace must outlive the network.
   */
  netns?: string;
  /** MTU of the TUN (576..65485). */
  mtu: number;
  /** The network's whole range: routed into the TUN (in its namespace). */
  network: Cidr;
  /** This host's lease of it: inner destinations of received packets must fall inside. */
  localSubnet: Cidr;
  /** Our VTEP MAC on this network: peers address their frames to it. */
  vtepMac: string;
  /**
   * The TUN's own address, given with the network's prefix length (default: localSubnet's
   * network address, as flannel does). Must lie inside localSubnet.
   */
  tunAddress?: string;
}

export class DatapathConfigError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

/**
 * Checks `value` of option `field` against the addon's spec of it (the one owner of the numeric
 * limits and defaults, native/options.h): absent is fine unless required; else an integer within
 * [min, max] (`max` lowered for the MTU by the encapsulation's overhead).
 */
function checkOption(spec: NativeOptionSpec, field: string, value: number | undefined, max = spec.max): void {
  if (value === undefined) {
    if (spec.required) throw new DatapathConfigError(field, 'required');
    return;
  }
  if (!Number.isInteger(value) || value < spec.min || value > max) {
    throw new DatapathConfigError(field, `must be an integer in ${spec.min}..${max}, got ${value}`);
  }
}

export function validateDatapathConfig(cfg: DatapathConfig): void {
  if (cfg.encap !== 'udp' && cfg.encap !== 'vxlan') {
    throw new DatapathConfigError('encap', `must be "udp" or "vxlan", got ${JSON.stringify(cfg.encap)}`);
  }
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(cfg.tunName)) {
    throw new DatapathConfigError('tunName', `must be 1-15 characters of [A-Za-z0-9_.-], got ${JSON.stringify(cfg.tunName)}`);
  }
  const o = addon.options.datapath;
  checkOption(o.mtu, 'mtu', cfg.mtu, addon.maxMtu[cfg.encap]);
  if (!cidrCovers(cfg.network, cfg.localSubnet)) {
    throw new DatapathConfigError('localSubnet', `${formatCidr(cfg.localSubnet)} is not inside ${formatCidr(cfg.network)}`);
  }
  checkOption(o.port, 'port', portOf(cfg));
  checkOption(o.vni, 'vni', cfg.vni);
  checkOption(o.queues, 'queues', cfg.queues ?? defaultQueues());
  checkOption(o.batch, 'batch', cfg.batch);
  checkOption(o.busyPollUs, 'busyPollUs', cfg.busyPollUs);
  checkOption(o.sliceUs, 'sliceUs', cfg.sliceUs);
  checkOption(o.tunQueueLen, 'tunQueueLen', cfg.tunQueueLen);
  if (cfg.cpuLocal !== undefined && typeof cfg.cpuLocal !== 'boolean') {
    throw new DatapathConfigError('cpuLocal', `must be true or false, got ${JSON.stringify(cfg.cpuLocal)}`);
  }
  checkOption(o.icmpPerSec, 'icmpPerSec', cfg.icmpPerSec);
  if (cfg.encap === 'vxlan' && !cfg.vtepMac) throw new DatapathConfigError('vtepMac', 'required for vxlan');
  if (cfg.vtepMac) {
    try {
      parseMac(cfg.vtepMac);
    } catch (e) {
      throw new DatapathConfigError('vtepMac', (e as Error).message);
    }
  }
  if (cfg.bindAddress !== undefined) {
    try {
      parseIPv4(cfg.bindAddress);
    } catch (e) {
      throw new DatapathConfigError('bindAddress', (e as Error).message);
    }
  }
}

/** The UDP port of `cfg`: its own, or flannel's default for its encapsulation. */
export function portOf(cfg: Pick<DatapathConfig, 'encap' | 'port'>): number {
  return cfg.port ?? DEFAULT_PORT[cfg.encap];
}

/** One worker per core the process may run on (at most the addon's limit of TUN queues). */
export function defaultQueues(): number {
  return Math.max(1, Math.min(addon.options.datapath.queues.max, os.availableParallelism()));
}

/** The addon's options for `cfg` (validated): absent tuning options take the addon's defaults. */
export function nativeOptions(cfg: DatapathConfig): NativeDatapathOptions {
  return {
    tunName: cfg.tunName,
    encap: cfg.encap,
    mtu: cfg.mtu,
    vni: cfg.vni,
    port: portOf(cfg),
    bindIp: cfg.bindAddress ? parseIPv4(cfg.bindAddress) : 0,
    batch: cfg.batch,
    queues: cfg.queues ?? defaultQueues(),
    busyPollUs: cfg.busyPollUs,
    sliceUs: cfg.sliceUs,
    tunQueueLen: cfg.tunQueueLen,
    cpuLocal: cfg.cpuLocal === undefined ? undefined : Number(cfg.cpuLocal),
    icmpPerSec: cfg.icmpPerSec,
    localNet: cfg.localSubnet.ip,
    localPrefixLen: cfg.localSubnet.prefixLen,
    // ICMP errors come from the unreachable destination: a local source would be dropped as a martian.
    icmpSrc: 0,
    // The TUN's own address: a datagram of ours from it that comes back through the TUN is a loop.
    tunIp: cfg.localSubnet.ip,
    localMac: cfg.vtepMac ? parseMac(cfg.vtepMac) : undefined,
  };
}

/** Checks a NetworkConfig whole (DatapathConfigError naming the field). */
export function checkNetworkConfig(cfg: NetworkConfig): void {
  const o = addon.options.network;
  checkOption(o.vni, 'vni', cfg.vni);
  if (typeof cfg.tunName !== 'string' || !/^[A-Za-z0-9_.-]{1,15}$/.test(cfg.tunName)) {
    throw new DatapathConfigError('tunName', `must be 1-15 characters of [A-Za-z0-9_.-], got ${JSON.stringify(cfg.tunName)}`);
  }
  if (cfg.netns !== undefined) {
    if (typeof cfg.netns !== 'string' || !cfg.netns.startsWith('/')) {
      throw new DatapathConfigError('netns', `must be an absolute path to a network namespace, got ${JSON.stringify(cfg.netns)}`);
    }
    try {
      statSync(cfg.netns);
    } catch (e) {
      throw new DatapathConfigError('netns', `${cfg.netns}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  checkOption(o.mtu, 'mtu', cfg.mtu, addon.maxMtu.vxlan);
  if (!cfg.network || !Number.isInteger(cfg.network.prefixLen)) throw new DatapathConfigError('network', 'must be a CIDR prefix');
  if (!cfg.localSubnet || !cidrCovers(cfg.network, cfg.localSubnet)) {
    throw new DatapathConfigError('localSubnet', `${cfg.localSubnet ? formatCidr(cfg.localSubnet) : String(cfg.localSubnet)} is not inside ${formatCidr(cfg.network)}`);
  }
  if (!cfg.vtepMac) throw new DatapathConfigError('vtepMac', 'required for vxlan');
  try {
    parseMac(cfg.vtepMac);
  } catch (e) {
    throw new DatapathConfigError('vtepMac', (e as Error).message);
  }
  if (cfg.tunAddress !== undefined) {
    let a: number;
    try {
      a = parseIPv4(cfg.tunAddress);
    } catch (e) {
      throw new DatapathConfigError('tunAddress', (e as Error).message);
    }
    if (!cidrContains(cfg.localSubnet, a)) {
      throw new DatapathConfigError('tunAddress', `${cfg.tunAddress} is not inside localSubnet ${formatCidr(cfg.localSubnet)}`);
    }
  }
}
