// The `vxnet` command: daemon (flanneld's flags; also the default when the first argument is a flag),
// status, docker-opts and bench. Usage errors exit 2, startup failures 1, each with one line naming the field.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { controlRequest, NoDaemonError } from './control/socket';
import { DAEMON_FLAGS, daemonFlagHelp, defaultControlSocket, envName, OptionError, parseFlags, resolveDaemonOptions } from './daemon/options';
import { type DaemonStatus, formatStatus } from './daemon/status';
import { DEFAULT_SUBNET_ENV, dockerOpts, dockerOptsEnvFile, readSubnetEnv } from './host/subnet-env';
import { createLogger } from './log';

const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;

const USAGE = `usage: vxnet <command> [flags]

commands:
  daemon [flags]        run the overlay daemon on this host (flanneld-compatible flags, below)
  status [--json]       show the running daemon: lease, backend, peers, etcd state, counters
  docker-opts           print dockerd options from subnet.env (mk-docker-opts.sh)
  bench [--quick] [--runs N] [--json FILE] [--docs]
                        benchmark every backend against the kernel references in namespaces
  version               print the version

status and docker-opts take --subnet-file FILE (default $FLANNELD_SUBNET_FILE, else ${DEFAULT_SUBNET_ENV}) to pick the daemon.
docker-opts also takes -d FILE (write mk-docker-opts.sh's env file), -k KEY (its variable name,
default DOCKER_OPTS), -m (omit --ip-masq).

daemon flags:
${daemonFlagHelp()}
`;

class UsageError extends Error {}

function fail(code: number, msg: string): number {
  process.stderr.write(`vxnet: ${msg}\n`);
  return code;
}

async function runDaemon(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h') || argv.includes('-help')) {
    process.stdout.write(USAGE);
    return 0;
  }
  let opts;
  try {
    // flanneld: --version prints and exits before anything else is looked at (the rest only parsed).
    if (parseFlags(argv, DAEMON_FLAGS).settings.get('version') === true) {
      const { VERSION } = await import('./daemon/daemon');
      process.stdout.write(`vxnet ${VERSION}\n`);
      return 0;
    }
    opts = resolveDaemonOptions(argv, process.env);
  } catch (err) {
    if (err instanceof OptionError) return fail(EXIT_USAGE, err.message);
    throw err;
  }
  const log = createLogger(opts.logLevel);
  // Loaded here so that flag errors never need the backends (or the native addon).
  const { Daemon, StartupError } = await import('./daemon/daemon');
  const daemon = new Daemon(opts, log);
  const onSignal = (sig: NodeJS.Signals) => void daemon.stop(`signal ${sig}`);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', onSignal);
  try {
    await daemon.start();
  } catch (err) {
    // Only a stop requested while starting (a signal) is a clean exit; start() itself calls stop() on failure.
    if (daemon.interrupted && !(err instanceof StartupError)) {
      await daemon.done;
      return 0;
    }
    // One line, as every startup failure (a require error, say, appends its whole require stack).
    return fail(EXIT_FAILURE, err instanceof StartupError ? err.message : `startup failed: ${String((err as Error).message).split('\n')[0].trim()}`);
  }
  await daemon.done;
  return 0;
}

function pickSocket(argv: string[], extra: Record<string, { kind: 'string' | 'bool' | 'list' | 'int'; help: string }>) {
  const { settings, positionals } = parseFlags(argv, {
    'subnet-file': { kind: 'string', help: '' },
    'control-socket': { kind: 'string', help: '' },
    ...extra,
  });
  if (positionals.length) throw new OptionError(positionals[0], 'unexpected argument');
  // The daemon may have been given its subnet file by FLANNELD_SUBNET_FILE: find it the same way.
  const fromEnv = (name: string) => process.env[envName(name)] || undefined;
  const subnetFile = (settings.get('subnet-file') as string | undefined) ?? fromEnv('subnet-file') ?? DEFAULT_SUBNET_ENV;
  const socket = (settings.get('control-socket') as string | undefined) ?? fromEnv('control-socket') ?? defaultControlSocket(subnetFile);
  return { settings, subnetFile, socket };
}

async function runStatus(argv: string[]): Promise<number> {
  const { settings, socket } = pickSocket(argv, { json: { kind: 'bool', help: '' } });
  let st: DaemonStatus;
  try {
    st = (await controlRequest(socket, { op: 'status' })) as DaemonStatus;
  } catch (err) {
    if (err instanceof NoDaemonError) return fail(3, `${err.message} (is \`vxnet daemon\` running with this --subnet-file?)`);
    return fail(EXIT_FAILURE, (err as Error).message);
  }
  process.stdout.write(settings.get('json') ? JSON.stringify(st, null, 2) + '\n' : formatStatus(st) + '\n');
  return 0;
}

async function runDockerOpts(argv: string[]): Promise<number> {
  // mk-docker-opts.sh's short flags, mapped to names parseFlags understands.
  const mapped = argv.map((a) => ({ '-f': '--subnet-file', '-d': '--dest', '-k': '--key', '-m': '--no-ip-masq' })[a] ?? a);
  const { settings, subnetFile } = pickSocket(mapped, {
    dest: { kind: 'string', help: '' },
    key: { kind: 'string', help: '' },
    'no-ip-masq': { kind: 'bool', help: '' },
  });
  let env;
  try {
    env = await readSubnetEnv(subnetFile);
  } catch (err) {
    return fail(EXIT_FAILURE, (err as Error).message);
  }
  if (!env) return fail(EXIT_FAILURE, `--subnet-file: ${subnetFile} does not exist (is the daemon running?)`);
  const ipMasqOpt = settings.get('no-ip-masq') !== true;
  const dest = settings.get('dest') as string | undefined;
  if (dest) {
    await writeFile(dest, dockerOptsEnvFile(env, { ipMasqOpt, key: settings.get('key') as string | undefined }));
  } else {
    process.stdout.write(dockerOpts(env, { ipMasqOpt }) + '\n');
  }
  return 0;
}

/**
 * `vxnet bench` runs the benchmark's own entry point (dist/bench/run.js) as a child with our stdio:
 * the product CLI imports nothing from the bench. Ctrl-C reaches the child too (same process group);
 * we wait for it to clean up its namespaces and pass on its exit status.
 */
function runBenchCommand(argv: string[]): Promise<number> {
  const runner = path.resolve(__dirname, '..', 'bench', 'run.js');
  if (!existsSync(runner)) return Promise.resolve(fail(EXIT_FAILURE, `the benchmark runner is not built (${runner} is missing: npm run build)`));
  return new Promise((resolve) => {
    const ignore = () => undefined;
    process.on('SIGINT', ignore);
    process.on('SIGTERM', ignore);
    const child = spawn(process.execPath, [runner, ...argv], { stdio: 'inherit', env: { ...process.env, VXNET_BENCH_VIA_CLI: '1' } });
    const done = (code: number) => {
      process.off('SIGINT', ignore);
      process.off('SIGTERM', ignore);
      resolve(code);
    };
    child.on('error', (err) => done(fail(EXIT_FAILURE, `the benchmark runner did not start: ${err.message}`)));
    child.on('exit', (code, signal) => done(code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : EXIT_FAILURE)));
  });
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
      process.stdout.write(USAGE);
      return cmd === undefined ? EXIT_USAGE : 0;
    }
    if (cmd === 'version' || cmd === '--version') {
      const { VERSION } = await import('./daemon/daemon');
      process.stdout.write(`vxnet ${VERSION}\n`);
      return 0;
    }
    // flanneld has no subcommands: `vxnet --etcd-endpoints=…` runs the daemon.
    if (cmd === 'daemon') return await runDaemon(rest);
    if (cmd.startsWith('-')) return await runDaemon(argv);
    if (cmd === 'status') return await runStatus(rest);
    if (cmd === 'docker-opts') return await runDockerOpts(rest);
    if (cmd === 'bench') return await runBenchCommand(rest);
    throw new UsageError(`unknown command ${JSON.stringify(cmd)} (try vxnet help)`);
  } catch (err) {
    if (err instanceof OptionError || err instanceof UsageError) return fail(EXIT_USAGE, err.message);
    return fail(EXIT_FAILURE, (err as Error).stack ?? String(err));
  }
}

if (require.main === module || require.main?.filename.endsWith('/bin/vxnet')) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
      // The daemon's etcd client may keep sockets open for a moment after stop.
      if (code !== 0 || process.argv[2] === 'daemon' || process.argv[2]?.startsWith('-')) setTimeout(() => process.exit(code), 200).unref();
    },
    (err) => {
      process.stderr.write(`vxnet: ${(err as Error).stack ?? err}\n`);
      process.exit(EXIT_FAILURE);
    },
  );
}
