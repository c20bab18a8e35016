// Running commands for the testbed: capture everything, never throw on a nonzero exit, but always
// bound the wait so a hung tool cannot stall a test run.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
}

export const DEFAULT_EXEC_TIMEOUT_MS = 30_000;

/** Renders argv for error messages so a failing command can be pasted into a shell. */
export function describeArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: ExecResult,
  ) {
    super(`command failed (exit ${result.code}): ${describeArgv(argv)}: ${result.stderr.trim() || result.stdout.trim() || 'no output'}`);
  }
}

/** Exit status as a shell reports it: the code, or 128 + signal number when killed. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0);
}

/**
 * Runs argv to completion. `track` sees the child first so an owner can kill it during teardown.
 * Rejects only when the program cannot be started or the timeout expires (after killing it).
 */
export function runCommand(argv: readonly string[], opts: ExecOptions = {}, track?: (child: ChildProcess) => void): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
  return new Promise<ExecResult>((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
    });
    track?.(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    if (opts.input !== undefined) {
      // A command that exits without reading its stdin must not crash us with EPIPE.
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(opts.input);
    }
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      // Settle now: a grandchild holding our pipes open would otherwise delay 'close' forever.
      child.stdout!.destroy();
      child.stderr!.destroy();
      const stderr = Buffer.concat(err).toString('utf8').trim();
      reject(new Error(`timed out after ${timeoutMs} ms: ${describeArgv(argv)}${stderr ? `: ${stderr}` : ''}`));
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${describeArgv(argv)}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: exitStatus(code, signal), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}
