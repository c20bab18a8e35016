// vxnet's own iptables chains: each one a chain we own completely plus one jump to it from a built-in
// chain, written in a single iptables-restore transaction, checked every resync period and rewritten
// when someone (a dockerd restart, an `iptables -F`) changed it, removed on stop. Uses the `iptables`
// the host has (iptables-nft or iptables-legacy, whichever the alternatives point to), always with -w,
// and acts on the current network namespace only.
import { execFile } from 'node:child_process';

/** A chain of ours and where it hangs. */
export interface OwnedChain {
  table: 'filter' | 'nat' | 'mangle' | 'raw';
  /** Our chain, e.g. VXNET-FWD. */
  chain: string;
  /** The built-in chain that jumps to ours, e.g. FORWARD. */
  hook: string;
  /**
   * first: the jump must be rule 1 of `hook`, so no earlier rule (Docker's isolation chains, a DROP)
   * decides first; last: appended, and anywhere in `hook` is fine (flannel's ip-masq jump).
   */
  position: 'first' | 'last';
  /** Comment on the jump (and, by convention, on our rules): says who added it. */
  comment: string;
  /** Rule specs of our chain, in order (without `-A CHAIN`). */
  rules: string[][];
}

export class IptablesError extends Error {}

export const IPTABLES = 'iptables';
export const IPTABLES_RESTORE = 'iptables-restore';

function run(bin: string, args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(bin, args, { encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 127) : 0;
      resolve({ code, stdout, stderr: stderr || (err && code === 127 ? err.message : '') });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** iptables -w ARGS; throws with the command and iptables' message unless it exits 0. */
export async function iptables(...args: string[]): Promise<string> {
  const r = await run(IPTABLES, ['-w', ...args]);
  if (r.code !== 0) throw new IptablesError(`${IPTABLES} -w ${args.join(' ')}: ${oneLine(r.stderr) || `exit ${r.code}`}`);
  return r.stdout;
}

/** iptables-restore -w --noflush: applies `text` as one transaction, touching nothing it does not name. */
async function restore(text: string): Promise<void> {
  const r = await run(IPTABLES_RESTORE, ['-w', '--noflush'], text);
  if (r.code !== 0) throw new IptablesError(`${IPTABLES_RESTORE} -w --noflush: ${oneLine(r.stderr) || `exit ${r.code}`}\n${text}`);
}

/** iptables' complaint without the "# Warning: iptables-legacy tables present" notes iptables-nft adds. */
function oneLine(stderr: string): string {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .join('; ');
}

/** `iptables -S CHAIN` lines of `table` (`-N`/`-P` and `-A` lines), or undefined when the chain does not exist. */
export async function listChain(table: string, chain: string): Promise<string[] | undefined> {
  const r = await run(IPTABLES, ['-w', '-t', table, '-S', chain]);
  if (r.code === 0) return r.stdout.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
  // legacy: "No chain/target/match by that name"; nft: "chain `X' in table `filter' is incompatible".
  if (r.code === 1 && /No chain|does not exist|incompatible/i.test(r.stderr)) return undefined;
  throw new IptablesError(`${IPTABLES} -w -t ${table} -S ${chain}: ${oneLine(r.stderr) || `exit ${r.code}`}`);
}

/** The `-A HOOK …` lines of `hook` whose target is our chain. */
function jumpsTo(hookLines: string[], chain: string): string[] {
  const target = new RegExp(`\\s-j\\s+${escapeRegExp(chain)}\\s*$`);
  return hookLines.filter((l) => l.startsWith('-A ') && target.test(l));
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** iptables-restore splits on whitespace and honours double quotes. */
export function quoteArg(arg: string): string {
  return /[\s"]/.test(arg) ? `"${arg.replace(/"/g, '\\"')}"` : arg;
}

function jumpSpec(c: OwnedChain): string[] {
  return ['-m', 'comment', '--comment', c.comment, '-j', c.chain];
}

/**
 * The iptables-restore transaction that makes `c` exactly as specified: declaring our chain creates
 * it or empties it, our rules follow, every existing jump to it is deleted and one is added at its
 * position. Pure, for tests.
 */
export function installScript(c: OwnedChain, existingJumps: string[]): string {
  const jump = jumpSpec(c).map(quoteArg).join(' ');
  return [
    `*${c.table}`,
    `:${c.chain} - [0:0]`,
    ...c.rules.map((r) => `-A ${c.chain} ${r.map(quoteArg).join(' ')}`),
    // `-S` prints rules in restore syntax; `-D` with the same spec removes exactly that rule.
    ...existingJumps.map((l) => l.replace(/^-A /, '-D ')),
    c.position === 'first' ? `-I ${c.hook} 1 ${jump}` : `-A ${c.hook} ${jump}`,
    'COMMIT',
    '',
  ].join('\n');
}

/** The transaction that removes every jump to `c` and, when it exists, the chain itself. */
export function removeScript(c: OwnedChain, existingJumps: string[], chainExists: boolean): string {
  return [
    `*${c.table}`,
    ...existingJumps.map((l) => l.replace(/^-A /, '-D ')),
    ...(chainExists ? [`:${c.chain} - [0:0]`, `-X ${c.chain}`] : []),
    'COMMIT',
    '',
  ].join('\n');
}

/**
 * What is wrong with `c` on the host, or undefined when it is intact. `rendered` is how iptables
 * printed our chain right after we installed it (iptables normalises specs, so we compare with its
 * own rendering rather than with ours).
 */
export async function chainProblem(c: OwnedChain, rendered: string[]): Promise<string | undefined> {
  const lines = await listChain(c.table, c.chain);
  if (!lines) return `chain ${c.chain} missing`;
  const body = lines.filter((l) => l.startsWith('-A '));
  if (body.length !== rendered.length || body.some((l, i) => l !== rendered[i])) return `rules of ${c.chain} changed`;
  const hookLines = (await listChain(c.table, c.hook)) ?? [];
  const jumps = jumpsTo(hookLines, c.chain);
  if (jumps.length === 0) return `jump from ${c.hook} missing`;
  if (jumps.length > 1) return `${jumps.length} jumps from ${c.hook}`;
  if (c.position === 'first' && hookLines.find((l) => l.startsWith('-A ')) !== jumps[0]) return `jump from ${c.hook} not first`;
  return undefined;
}

/** Installs (or rewrites) `c` in one transaction; returns iptables' rendering of our rules. */
export async function installChain(c: OwnedChain): Promise<string[]> {
  const hookLines = (await listChain(c.table, c.hook)) ?? [];
  await restore(installScript(c, jumpsTo(hookLines, c.chain)));
  return ((await listChain(c.table, c.chain)) ?? []).filter((l) => l.startsWith('-A '));
}

/** Removes every jump to `c` and the chain; a no-op when they are absent. */
export async function removeChain(c: Pick<OwnedChain, 'table' | 'chain' | 'hook'>): Promise<void> {
  const hookLines = (await listChain(c.table, c.hook)) ?? [];
  const jumps = jumpsTo(hookLines, c.chain);
  const exists = (await listChain(c.table, c.chain)) !== undefined;
  if (jumps.length === 0 && !exists) return;
  await restore(removeScript(c as OwnedChain, jumps, exists));
}

/** What the host's iptables is: nf_tables or legacy, and whether the other kind holds tables too. */
export interface IptablesInfo {
  /** "nf_tables", "legacy", or "" when `iptables --version` does not say. */
  mode: string;
  /** iptables-nft saw iptables-legacy tables in this namespace (dockerd may be using those). */
  legacyTablesPresent: boolean;
}

/**
 * Checks that iptables works here (read-only: `iptables -S HOOK`), so a daemon fails before it
 * creates anything, and says which kind it is.
 */
export async function checkIptables(table: string, hook: string): Promise<IptablesInfo> {
  const version = await run(IPTABLES, ['--version']);
  if (version.code !== 0) throw new IptablesError(`${IPTABLES} --version: ${oneLine(version.stderr) || `exit ${version.code}`}`);
  const listing = await run(IPTABLES, ['-w', '-t', table, '-S', hook]);
  if (listing.code !== 0) throw new IptablesError(`${IPTABLES} -w -t ${table} -S ${hook}: ${oneLine(listing.stderr) || `exit ${listing.code}`}`);
  return {
    mode: /\((nf_tables|legacy)\)/.exec(version.stdout)?.[1] ?? '',
    legacyTablesPresent: /iptables-legacy tables present/.test(listing.stderr),
  };
}

export interface KeeperLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface KeeperStatus {
  chains: string[];
  resyncSeconds: number;
  /** Times a check found a chain changed and rewrote it. */
  repairs: number;
  lastRepair?: string;
  lastCheck?: string;
  lastError?: string;
}

/**
 * Keeps a set of owned chains in place: install() writes them, then every `resyncSeconds` each is
 * checked and rewritten when changed (flanneld's --iptables-resync); stop() ends the checks and
 * removes them. A failed check is logged and retried at the next period; forwarding goes on.
 */
export class ChainKeeper {
  private readonly rendered = new Map<string, string[]>();
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> = Promise.resolve();
  private stopped = false;
  private installed: OwnedChain[] = [];
  private repairs = 0;
  private lastRepair: Date | undefined;
  private lastCheck: Date | undefined;
  private lastError: string | undefined;

  constructor(
    private readonly chains: OwnedChain[],
    private readonly resyncSeconds: number,
    private readonly log: KeeperLog,
  ) {}

  /** Writes every chain; throws on the first failure (the caller undoes with stop()). */
  async install(): Promise<void> {
    for (const c of this.chains) {
      // Recorded before writing: stop() removes a half-written chain too.
      this.installed.push(c);
      this.rendered.set(c.chain, await installChain(c));
    }
    this.schedule();
  }

  /** One check of every chain, rewriting the changed ones; exposed for tests and resync. */
  resync(): Promise<void> {
    this.checking = this.checking.then(() => this.checkAll());
    return this.checking;
  }

  private schedule(): void {
    if (this.stopped || this.resyncSeconds <= 0) return;
    this.timer = setTimeout(() => {
      void this.resync().finally(() => this.schedule());
    }, this.resyncSeconds * 1000);
    this.timer.unref();
  }

  private async checkAll(): Promise<void> {
    if (this.stopped) return;
    try {
      for (const c of this.installed) {
        const problem = await chainProblem(c, this.rendered.get(c.chain) ?? []);
        if (problem === undefined || this.stopped) continue;
        this.log.warn('iptables rules changed by someone else; rewriting them', { chain: c.chain, problem });
        this.rendered.set(c.chain, await installChain(c));
        this.repairs++;
        this.lastRepair = new Date();
      }
      if (this.lastError !== undefined) this.log.info('iptables resync works again', { chains: this.installed.map((c) => c.chain).join(',') });
      this.lastError = undefined;
    } catch (err) {
      const msg = (err as Error).message.split('\n')[0];
      // Logged when it changes, not every period.
      if (msg !== this.lastError) this.log.error('iptables resync failed; retrying every resync period', { error: msg });
      this.lastError = msg;
    } finally {
      this.lastCheck = new Date();
    }
  }

  /** Ends the checks (waiting for one in flight) and removes every chain this keeper wrote. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.checking.catch(() => undefined);
    const errors: string[] = [];
    for (const c of [...this.installed].reverse()) {
      await removeChain(c).catch((err: Error) => errors.push(err.message.split('\n')[0]));
    }
    this.installed = [];
    if (errors.length) throw new IptablesError(errors.join('; '));
  }

  status(): KeeperStatus {
    return {
      chains: this.chains.map((c) => `${c.table}/${c.chain}`),
      resyncSeconds: this.resyncSeconds,
      repairs: this.repairs,
      lastRepair: this.lastRepair?.toISOString(),
      lastCheck: this.lastCheck?.toISOString(),
      lastError: this.lastError,
    };
  }
}
