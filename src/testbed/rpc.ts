// Typed request/response over Node's IPC channel to a child process running inside a bed namespace:
// the one shape behind the bench's agent, the datapath host of the datapath tests and bench, and the
// backend host of the backend tests. The parent starts the child with RpcChild.start() and calls it;
// the child answers with serveRpc().
//
// Wire: parent → child {id, req}; child → parent {id, ok: true, result} | {id, ok: false, error,
// field?}, once {ready: true, ...facts} (or {ready: false, error}) when it is ready, and any number
// of {log: {level, msg, fields}} lines.
import type { ChildProcess } from 'node:child_process';
import { stopChild } from './children';
import type { NetBed } from './netbed';
import { parseCidr } from '../net/ip';
import type { Lease, LeaseAttrs } from '../subnet/types';

/** A request the child refused; `field` names the option at fault where the child said so. */
export class RpcError extends Error {
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

export interface RpcLogLine {
  level: 'info' | 'warn' | 'error';
  msg: string;
  fields?: Record<string, unknown>;
}

export interface RpcStartOptions {
  /** Names the child in errors ("dp-host in vx…-h1"). */
  name: string;
  /** How long the child may take to say it is ready (default 15 s). */
  readyTimeoutMs?: number;
  /** The child's stderr: inherited (default) or kept, its tail quoted when the child dies. */
  stderr?: 'inherit' | 'pipe';
  /** Log lines the child sends ({log: …}). */
  onLog?: (line: RpcLogLine) => void;
  /** The child's environment (default: ours). */
  env?: NodeJS.ProcessEnv;
}

type Wire = { id?: number; ok?: boolean; result?: unknown; error?: string; field?: string; ready?: boolean; log?: RpcLogLine };

export class RpcChild<Req> {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer?: NodeJS.Timeout }>();
  private stderrTail = '';

  private constructor(
    readonly child: ChildProcess,
    private readonly name: string,
    /** What the child said when it was ready (besides `ready`). */
    readonly facts: Record<string, unknown>,
  ) {}

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Spawns `argv` inside `ns` with an IPC channel and waits for its ready message. */
  static async start<Req>(bed: NetBed, ns: string, argv: string[], opts: RpcStartOptions): Promise<RpcChild<Req>> {
    const child = bed.spawn(ns, argv, { stdio: ['ignore', 'inherit', opts.stderr ?? 'inherit', 'ipc'], ...(opts.env ? { env: opts.env } : {}) });
    let tail = '';
    child.stderr?.on('data', (b: Buffer) => (tail = (tail + b.toString()).slice(-4000)));
    const facts = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${opts.name} did not start within ${(opts.readyTimeoutMs ?? 15_000) / 1000} s`));
      }, opts.readyTimeoutMs ?? 15_000);
      const onMessage = (raw: unknown) => {
        const m = raw as Wire;
        if (m.log) return opts.onLog?.(m.log);
        if (m.ready === undefined) return;
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
        if (m.ready) resolve(m as Record<string, unknown>);
        else reject(new Error(`${opts.name}: ${m.error ?? 'failed to start'}`));
      };
      const onExit = (code: number | null, sig: string | null) => {
        clearTimeout(timer);
        reject(new Error(`${opts.name} exited (${code ?? sig}) before it was ready${tail.trim() ? `: ${tail.trim()}` : ''}`));
      };
      child.on('message', onMessage);
      child.once('exit', onExit);
    });
    const rpc = new RpcChild<Req>(child, opts.name, facts);
    rpc.stderrTail = tail;
    child.stderr?.on('data', (b: Buffer) => (rpc.stderrTail = (rpc.stderrTail + b.toString()).slice(-4000)));
    child.on('message', (raw) => {
      const m = raw as Wire;
      if (m.log) return opts.onLog?.(m.log);
      if (m.id === undefined) return;
      const p = rpc.pending.get(m.id);
      if (!p) return;
      rpc.pending.delete(m.id);
      clearTimeout(p.timer);
      if (m.ok) p.resolve(m.result);
      else p.reject(new RpcError(String(m.error), m.field));
    });
    child.on('exit', (code, sig) => {
      const why = `${rpc.name} exited (${code ?? sig})${rpc.stderrTail.trim() ? `: ${rpc.stderrTail.trim()}` : ''}`;
      for (const p of rpc.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(why));
      }
      rpc.pending.clear();
    });
    return rpc;
  }

  /** Sends `req`; resolves with the child's result, rejects with its RpcError (or after `timeoutMs`, if given). */
  call<T>(req: Req, timeoutMs?: number): Promise<T> {
    if (!this.child.connected) return Promise.reject(new Error(`${this.name} is gone`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const entry: { resolve: (v: unknown) => void; reject: (e: Error) => void; timer?: NodeJS.Timeout } = { resolve: resolve as (v: unknown) => void, reject };
      if (timeoutMs !== undefined) {
        entry.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new Error(`${this.name}: no answer to ${JSON.stringify((req as { op?: unknown }).op ?? req)} within ${timeoutMs / 1000} s`));
        }, timeoutMs);
      }
      this.pending.set(id, entry);
      this.child.send({ id, req });
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Closes the channel (a served child exits on disconnect) and waits; SIGKILL after `timeoutMs`. */
  async stop(timeoutMs = 5_000): Promise<void> {
    if (this.running && this.child.connected) {
      try {
        this.child.disconnect();
      } catch {
        // already disconnected
      }
    }
    await stopChild(this.child, timeoutMs);
  }
}

/**
 * The child side: answers every {id, req} with handler(req), says it is ready with `facts`, and
 * exits when the parent goes away (the channel closes) after `onExit` (cleanup) ran.
 */
export function serveRpc<Req>(handler: (req: Req) => Promise<unknown> | unknown, facts: Record<string, unknown> = {}, onExit?: () => void | Promise<void>): void {
  const send = (m: unknown) => {
    if (process.connected) process.send?.(m);
  };
  process.on('message', (raw) => {
    const { id, req } = raw as { id: number; req: Req };
    Promise.resolve()
      .then(() => handler(req))
      .then(
        (result) => send({ id, ok: true, result }),
        (e: Error & { field?: string }) => send({ id, ok: false, error: e?.message ?? String(e), field: e?.field }),
      );
  });
  let exiting = false;
  const exit = () => {
    if (exiting) return;
    exiting = true;
    Promise.resolve(onExit?.())
      .catch(() => undefined)
      .finally(() => process.exit(0));
  };
  process.on('disconnect', exit);
  process.on('SIGTERM', exit);
  process.on('SIGINT', exit);
  send({ ready: true, pid: process.pid, ...facts });
}

/** The child side when it cannot start: tells the parent why, then exits 1. */
export function failRpc(err: unknown, name: string): void {
  const message = err instanceof Error ? err.message : String(err);
  console.error(`${name}: ${message}`);
  if (process.connected && process.send) process.send({ ready: false, error: message }, () => process.exit(1));
  else process.exit(1);
}

/** A log line to the parent ({log: …}). */
export function rpcLog(level: RpcLogLine['level'], msg: string, fields?: Record<string, unknown>): void {
  if (process.connected) process.send?.({ log: { level, msg, fields } });
}

/** A lease as it crosses the IPC channel (the subnet as text). */
export interface WireLease {
  subnet: string;
  attrs: LeaseAttrs;
}

export function fromWireLease(w: WireLease): Lease {
  return { subnet: parseCidr(w.subnet, true), attrs: w.attrs };
}
