// What the driver must remember across restarts (dockerd does not replay its calls to a restarted
// plugin): the pools this host holds and its lease in each, its Docker networks and endpoints. One
// JSON file, written atomically (temp file, fsync, rename) after every change.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';

export interface SavedPool {
  key: string;
  /** Our lease of the range ("10.250.3.0/24"). */
  subnet: string;
  /** Container addresses handed out ("10.250.3.2"). */
  addresses: string[];
}

export interface SavedNetwork {
  /** dockerd's NetworkID on this host. */
  id: string;
  key: string;
  mtu: number;
  name?: string;
}

export interface SavedEndpoint {
  id: string;
  networkId: string;
  address: string;
  macAddress?: string;
  joined: boolean;
}

export interface SavedState {
  version: 1;
  pools: SavedPool[];
  networks: SavedNetwork[];
  endpoints: SavedEndpoint[];
}

export const EMPTY_STATE: SavedState = { version: 1, pools: [], networks: [], endpoints: [] };

/** Reads the state; a missing file is an empty state, an unreadable one an error naming the file. */
export function readState(file: string): SavedState {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ...EMPTY_STATE, pools: [], networks: [], endpoints: [] };
    throw err;
  }
  const doc = JSON.parse(text) as Partial<SavedState>;
  if (doc.version !== 1 || !Array.isArray(doc.pools) || !Array.isArray(doc.networks) || !Array.isArray(doc.endpoints)) {
    throw new Error(`${file}: not a vxnet docker state file (version 1)`);
  }
  return doc as SavedState;
}

export function writeState(file: string, state: SavedState): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, JSON.stringify(state, null, 1));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dirFd = openSync(path.dirname(file), 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}
