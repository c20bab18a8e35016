// The bench's helper inside a bed namespace, driven over IPC by bench/run.ts: writes leases to etcd
// and times how long the local daemon takes to install them (one clock for both ends), reads daemon
// status, and, before the daemon exists or with --direct, runs a backend itself like the e2e tests.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { Etcd3 } from 'etcd3';
import type { BackendNetwork, ExternalInterface, Logger } from '../src/backend/backend';
import { parseCidr } from '../src/net/ip';
import { fromWireLease, serveRpc, type WireLease } from '../src/testbed/rpc';
import { parseNetworkConfig } from '../src/subnet/config';

const ROOT = path.resolve(__dirname, '..', '..');
export const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');

export type { WireLease } from '../src/testbed/rpc';

export type AgentRequest =
  | { op: 'etcdPut'; endpoint: string; kvs: Array<[string, string]> }
  | { op: 'etcdDeletePrefix'; endpoint: string; prefix: string }
  | { op: 'etcdCount'; endpoint: string; prefix: string }
  | { op: 'status'; subnetFile: string }
  | { op: 'putAndWait'; endpoint: string; kvs: Array<[string, string]>; subnetFile: string; wantInstalled: number; timeoutMs: number; pollMs: number }
  | { op: 'waitInstalled'; subnetFile: string; wantInstalled: number; timeoutMs: number; pollMs: number }
  | { op: 'backendStart'; backend: Record<string, unknown>; iface: ExternalInterface; network: string; subnetLen: number; subnet: string }
  | { op: 'backendAttrs'; backend: Record<string, unknown>; iface: ExternalInterface; network: string; subnetLen: number }
  | { op: 'backendPeers'; peers: WireLease[] }
  | { op: 'backendClose' };

export interface StatusLike {
  pid?: number;
  peers?: Array<{ subnet: string; publicIp: string; installed?: boolean }>;
  [k: string]: unknown;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ etcd

const clients = new Map<string, Etcd3>();
function etcd(endpoint: string): Etcd3 {
  let c = clients.get(endpoint);
  if (!c) {
    c = new Etcd3({ hosts: endpoint, dialTimeout: 3000 });
    clients.set(endpoint, c);
  }
  return c;
}

/** Puts in transactions of 100 (etcd's default limit is 128 ops), 8 transactions in flight. */
async function putMany(endpoint: string, kvs: Array<[string, string]>): Promise<void> {
  const c = etcd(endpoint);
  const chunks: Array<Array<[string, string]>> = [];
  for (let i = 0; i < kvs.length; i += 100) chunks.push(kvs.slice(i, i + 100));
  let next = 0;
  const worker = async () => {
    while (next < chunks.length) {
      const chunk = chunks[next++];
      await c.kv.txn({ success: chunk.map(([k, v]) => ({ request_put: { key: Buffer.from(k), value: Buffer.from(v) } })) });
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, chunks.length) }, worker));
}

// ------------------------------------------------------------------ daemon status

type StatusFetcher = (subnetFile: string) => Promise<StatusLike>;
let fetcher: StatusFetcher | undefined;

/** `vxnet status --json` as a subprocess: the documented interface, always available. */
function cliStatus(subnetFile: string): Promise<StatusLike> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'status', '--json', '--subnet-file', subnetFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      try {
        if (code !== 0) throw new Error(`vxnet status exited ${code}: ${err.trim() || out.trim()}`);
        resolve(JSON.parse(out) as StatusLike);
      } catch (e) {
        reject(e);
      }
    });
  });
}

/** Straight to the control socket when its module is there (no node start-up per poll). */
async function pickFetcher(subnetFile: string): Promise<StatusFetcher> {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const sock = require(path.join(ROOT, 'dist', 'src', 'control', 'socket.js')) as { controlRequest: (n: string, r: { op: string }, t?: number) => Promise<unknown> };
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const opts = require(path.join(ROOT, 'dist', 'src', 'daemon', 'options.js')) as { defaultControlSocket: (f: string) => string };
    const direct: StatusFetcher = async (f) => (await sock.controlRequest(opts.defaultControlSocket(f), { op: 'status' }, 10_000)) as StatusLike;
    const st = await direct(subnetFile);
    if (st && Array.isArray(st.peers)) return direct;
  } catch {
    // Fall back to the CLI.
  }
  return cliStatus;
}

async function status(subnetFile: string): Promise<StatusLike> {
  fetcher ??= await pickFetcher(subnetFile);
  return fetcher(subnetFile);
}

const installedCount = (st: StatusLike) => (st.peers ?? []).filter((p) => p.installed !== false).length;

async function waitInstalled(subnetFile: string, want: number, timeoutMs: number, pollMs: number, t0: number) {
  const deadline = t0 + timeoutMs;
  let polls = 0;
  let last = -1;
  for (;;) {
    let n = -1;
    try {
      n = installedCount(await status(subnetFile));
    } catch {
      // The daemon may be too busy to answer within the timeout: keep polling.
    }
    polls++;
    last = n;
    if (n >= want) return { seconds: (performance.now() - t0) / 1000, polls, installed: n };
    if (performance.now() > deadline) throw new Error(`only ${last} of ${want} peers installed after ${timeoutMs / 1000} s`);
    await sleep(pollMs);
  }
}

// ------------------------------------------------------------------ direct backend (no daemon)

let net: BackendNetwork | undefined;
const log: Logger = { info: () => undefined, warn: () => undefined, error: (m, f) => console.error(`backend: ${m} ${JSON.stringify(f ?? {})}`) };

async function makeBackend(backend: Record<string, unknown>, iface: ExternalInterface, network: string, subnetLen: number) {
  const { createBackend } = await import('../src/backend/registry');
  const config = parseNetworkConfig(JSON.stringify({ Network: network, SubnetLen: subnetLen, Backend: backend }));
  return createBackend({ config, iface, log });
}

const toLease = fromWireLease;

// ------------------------------------------------------------------ dispatch

async function handle(req: AgentRequest): Promise<unknown> {
  switch (req.op) {
    case 'etcdPut': {
      const t0 = performance.now();
      await putMany(req.endpoint, req.kvs);
      return { seconds: (performance.now() - t0) / 1000 };
    }
    case 'etcdDeletePrefix':
      await etcd(req.endpoint).delete().prefix(req.prefix);
      return null;
    case 'etcdCount':
      return etcd(req.endpoint).getAll().prefix(req.prefix).count();
    case 'status':
      return status(req.subnetFile);
    case 'putAndWait': {
      await status(req.subnetFile); // pick the fetcher before the clock starts
      const t0 = performance.now();
      await putMany(req.endpoint, req.kvs);
      const writeSeconds = (performance.now() - t0) / 1000;
      const r = await waitInstalled(req.subnetFile, req.wantInstalled, req.timeoutMs, req.pollMs, t0);
      return { writeSeconds, ...r };
    }
    case 'waitInstalled':
      return waitInstalled(req.subnetFile, req.wantInstalled, req.timeoutMs, req.pollMs, performance.now());
    case 'backendAttrs':
      return (await makeBackend(req.backend, req.iface, req.network, req.subnetLen)).leaseAttrs();
    case 'backendStart': {
      const b = await makeBackend(req.backend, req.iface, req.network, req.subnetLen);
      net = await b.start({ subnet: parseCidr(req.subnet, true), attrs: await b.leaseAttrs() });
      return { mtu: net.mtu, pid: process.pid };
    }
    case 'backendPeers': {
      const t0 = performance.now();
      await net!.setPeers(req.peers.map(toLease));
      return { seconds: (performance.now() - t0) / 1000 };
    }
    case 'backendClose':
      await net?.close();
      net = undefined;
      return null;
  }
}

if (require.main === module) {
  // The parent closing the channel (Agent.stop) or a signal: the backend's own teardown, then exit.
  serveRpc(handle, {}, async () => {
    await net?.close().catch(() => undefined);
    for (const c of clients.values()) c.close();
  });
}
