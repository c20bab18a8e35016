// Every process a bed starts is tracked here so teardown can stop it before its namespace goes.
import type { ChildProcess } from 'node:child_process';

const exited = (c: ChildProcess): boolean => c.exitCode !== null || c.signalCode !== null;

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    child.kill(sig);
  } catch {
    // Already gone: nothing to stop.
  }
}

export class ChildTracker {
  private readonly children = new Set<ChildProcess>();

  add(child: ChildProcess): void {
    // No pid means spawn failed: there is nothing to stop, and 'exit' may never come.
    if (exited(child) || child.pid === undefined) return;
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
  }

  get size(): number {
    return this.children.size;
  }

  /** SIGTERM, then SIGKILL whatever is still running after `graceMs`; resolves once all exited. */
  async stopAll(graceMs: number): Promise<void> {
    const all = [...this.children];
    await Promise.all(all.map((c) => stopChild(c, graceMs)));
  }

  /** For exit paths: no event loop left to wait on, so kill outright. */
  killAllSync(): void {
    for (const c of this.children) signal(c, 'SIGKILL');
  }
}

/** Stops one child: SIGTERM, SIGKILL after `graceMs`, and waits (bounded) for it to exit. */
export async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (exited(child) || child.pid === undefined) return;
  signal(child, 'SIGTERM');
  if (await waitExit(child, graceMs)) return;
  signal(child, 'SIGKILL');
  await waitExit(child, 2_000);
}
