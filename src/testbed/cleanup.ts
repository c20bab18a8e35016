// Namespace teardown, plus the process-global safety net: beds are removed on exit, on uncaught
// exceptions (which still emit 'exit') and on SIGINT/SIGTERM, and stale beds of dead owners can
// be swept. Only namespaces whose names we generated are ever touched.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { runCommand } from './exec';
import { ownerOf, pidNamespaceTag } from './naming';

/** Where iproute2 keeps named namespaces (NETNS_RUN_DIR). */
const NETNS_DIR = '/var/run/netns';

export interface LiveBed {
  readonly prefix: string;
  namespaceNames(): readonly string[];
  killChildrenSync(): void;
}

const live = new Set<LiveBed>();
const SIGNALS = ['SIGINT', 'SIGTERM'] as const;
type HandledSignal = (typeof SIGNALS)[number];

/** Names of all named network namespaces on the machine. */
export function listNamespaces(): string[] {
  try {
    return readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

function parsePids(text: string): number[] {
  return text
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number)
    .filter((pid) => pid !== process.pid);
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Exited meanwhile.
  }
}

/** Blocks the thread briefly; used only on exit paths where the event loop is gone. */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function namespacePidsSync(ns: string): number[] {
  try {
    return parsePids(execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
  } catch {
    return [];
  }
}

/** Synchronous teardown: SIGKILL every process inside each namespace, then delete them all. */
export function teardownNamespacesSync(names: readonly string[]): void {
  for (const ns of names) {
    for (let round = 0; round < 20; round++) {
      const pids = namespacePidsSync(ns);
      if (!pids.length) break;
      pids.forEach(killPid);
      sleepSync(10);
    }
  }
  if (!names.length) return;
  try {
    // -force: keep going past namespaces that were never created or are already gone.
    execFileSync('ip', ['-force', '-batch', '-'], { input: names.map((n) => `netns del ${n}\n`).join(''), stdio: ['pipe', 'ignore', 'ignore'] });
  } catch {
    // Missing namespaces make the batch exit nonzero; the rest were still deleted.
  }
}

async function namespacePids(ns: string): Promise<number[]> {
  const r = await runCommand(['ip', 'netns', 'pids', ns], { timeoutMs: 10_000 });
  return r.code === 0 ? parsePids(r.stdout) : [];
}

/**
 * Kills every process in the namespaces and deletes them. Returns the names that still exist
 * afterwards (empty on success), so callers can report instead of silently leaking.
 */
export async function teardownNamespaces(names: readonly string[]): Promise<string[]> {
  await Promise.all(
    names.map(async (ns) => {
      for (let round = 0; round < 100; round++) {
        const pids = await namespacePids(ns);
        if (!pids.length) return;
        pids.forEach(killPid);
        await new Promise((r) => setTimeout(r, 10));
      }
    }),
  );
  if (names.length) {
    await runCommand(['ip', '-force', '-batch', '-'], { input: names.map((n) => `netns del ${n}\n`).join(''), timeoutMs: 30_000 });
  }
  const left = new Set(listNamespaces());
  return names.filter((n) => left.has(n));
}

function teardownAllSync(): void {
  for (const bed of [...live]) {
    bed.killChildrenSync();
    teardownNamespacesSync(bed.namespaceNames());
    live.delete(bed);
  }
  uninstallHandlers();
}

function onExit(): void {
  teardownAllSync();
}

function onSignal(sig: HandledSignal): void {
  teardownAllSync();
  // Exit like the default action would, unless the program has its own handler for this signal.
  if (process.listenerCount(sig) === 0) process.exit(128 + osConstants.signals[sig]);
}

let installed = false;

function installHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstallHandlers(): void {
  if (!installed) return;
  installed = false;
  process.off('exit', onExit);
  for (const s of SIGNALS) process.off(s, onSignal);
}

/** Handlers exist only while some bed is alive, so signals behave normally otherwise. */
export function registerBed(bed: LiveBed): void {
  live.add(bed);
  installHandlers();
}

export function unregisterBed(bed: LiveBed): void {
  live.delete(bed);
  if (live.size === 0) uninstallHandlers();
}

export function liveBedCount(): number {
  return live.size;
}

/** Alive unless the pid is gone or a zombie (PID 1 in a container may never reap it). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Deletes bed namespaces left by dead owners in our PID namespace. Beds of live processes,
 * including our own, and namespaces with foreign names are left alone. Returns what was deleted.
 */
export async function cleanupStaleNamespaces(): Promise<string[]> {
  const ourTag = pidNamespaceTag();
  const stale = listNamespaces().filter((name) => {
    const owner = ownerOf(name);
    return owner !== undefined && owner.pidNsTag === ourTag && owner.pid !== process.pid && !pidAlive(owner.pid);
  });
  const left = await teardownNamespaces(stale);
  return stale.filter((n) => !left.includes(n));
}
