// The daemon's side of the lease snapshot: pick it up at startup when etcd is down, keep it written
// while running, and check it against etcd once etcd answers. The file format is src/subnet/snapshot.ts.
import type { ExternalInterface } from '../backend/backend';
import { readSubnetEnv } from '../host/subnet-env';
import type { LevelLogger } from '../log';
import { cidrEquals } from '../net/ip';
import { parseNetworkConfig } from '../subnet/config';
import { configKey } from '../subnet/lease';
import type { LeaseManager } from '../subnet/manager';
import type { LeaseRegistry } from '../subnet/registry';
import { checkSnapshot, readSnapshot, removeStaleTemps, SnapshotError, snapshotPath, SnapshotWriter, type Snapshot } from '../subnet/snapshot';
import type { LeaseAttrs, NetworkConfig } from '../subnet/types';
import type { DaemonOptions } from './options';

/** With a usable snapshot, how long startup waits for etcd before serving the snapshot instead. */
export const SNAPSHOT_PROBE_MS = 300;

/** The snapshot, if there is one fit for this host and settings; anything else is ignored with one warning. */
export async function loadUsableSnapshot(opts: DaemonOptions, iface: ExternalInterface, log: LevelLogger): Promise<Snapshot | undefined> {
  const file = snapshotPath(opts.stateDir, opts.subnetFile);
  await removeStaleTemps(file);
  try {
    const snap = await readSnapshot(file);
    if (!snap) return undefined;
    const env = await readSubnetEnv(opts.subnetFile).catch(() => undefined);
    checkSnapshot(snap, { prefix: opts.etcdPrefix, publicIp: iface.publicIp, subnetEnv: env }, file);
    return snap;
  } catch (err) {
    log.warn('ignoring the lease snapshot', { file, reason: err instanceof SnapshotError ? err.reason : (err as Error).message });
    return undefined;
  }
}

/**
 * The network config from etcd, or, when a usable snapshot exists and etcd does not answer within
 * SNAPSHOT_PROBE_MS, the snapshot's. `isOutage` tells an unreachable etcd from one that answered "no"
 * (credentials, permissions, certificates), which is an error, not an outage.
 */
export async function configOrSnapshot(
  snapshot: Snapshot | undefined,
  fetchConfig: () => Promise<string | undefined>,
  isOutage: (err: unknown) => boolean,
  log: LevelLogger,
): Promise<{ confText: string | undefined; fromSnapshot?: Snapshot }> {
  if (!snapshot) return { confText: await fetchConfig() };
  const probeStart = Date.now();
  const fetching = fetchConfig();
  fetching.catch(() => undefined);
  const outcome = await Promise.race([
    fetching.then(
      (text) => ({ ok: true as const, text }),
      (err: unknown) => ({ ok: false as const, err }),
    ),
    new Promise<undefined>((r) => setTimeout(() => r(undefined), SNAPSHOT_PROBE_MS).unref()),
  ]);
  if (outcome?.ok) {
    log.debug('etcd answered the startup probe; the snapshot is not needed', { ms: Date.now() - probeStart });
    return { confText: outcome.text };
  }
  if (outcome && !isOutage(outcome.err)) throw outcome.err;
  log.warn('etcd unreachable, serving snapshot', {
    savedAt: new Date(snapshot.savedAt).toISOString(),
    error: outcome ? String((outcome.err as Error).message ?? outcome.err).split('\n')[0] : `no answer within ${SNAPSHOT_PROBE_MS} ms`,
  });
  return { confText: snapshot.configText, fromSnapshot: snapshot };
}

/** Rewrites the snapshot whenever the manager's lease or records change. */
export function startSnapshotWriter(opts: DaemonOptions, manager: LeaseManager, prefix: string, configText: string, attrs: LeaseAttrs, log: LevelLogger): SnapshotWriter {
  const writer = new SnapshotWriter(
    snapshotPath(opts.stateDir, opts.subnetFile),
    () => {
      const state = manager.exportState();
      return state && { savedAt: Date.now(), prefix, configText, revision: state.revision, records: state.records, own: { ...state.own, attrs } };
    },
    (err) => log.warn('cannot write the lease snapshot; a restart while etcd is down will need etcd', { file: writer.file, error: err.message }),
  );
  manager.on('state', () => writer.schedule());
  return writer;
}

/** Started from a snapshot: once etcd answers, says loudly if its network config is not the snapshot's. */
export function checkConfigWhenEtcdAnswers(manager: LeaseManager, registry: LeaseRegistry, running: NetworkConfig, log: LevelLogger): void {
  manager.once('etcd', () => {
    registry.getNetworkConfig().then(
      (text) => {
        let now: NetworkConfig | undefined;
        try {
          now = text === undefined ? undefined : parseNetworkConfig(text);
        } catch {
          now = undefined;
        }
        const same =
          now !== undefined &&
          cidrEquals(now.network, running.network) &&
          now.subnetLen === running.subnetLen &&
          now.subnetMin === running.subnetMin &&
          now.subnetMax === running.subnetMax &&
          JSON.stringify(now.backend.raw) === JSON.stringify(running.backend.raw);
        if (!same) log.error('the network config in etcd differs from the snapshot this daemon started from; restart the daemon to apply it', { key: configKey(registry.prefix) });
      },
      () => undefined,
    );
  });
}
