// Where the cycles go: reads a `perf record -a -g` file (bench/datapath.ts --perf) and splits the
// samples by process kind and, for vxnet's workers, by the job the stack was doing.
//
//   node dist/bench/profile.js FILE [--gbytes N]     (N: gigabytes moved while recording)
//
// Every sample is one tick of CPU time, so shares are of the whole machine's time while recording;
// with --gbytes the table adds CPU seconds per GB moved.
import { execFileSync } from 'node:child_process';

/** Stack frames (innermost first) -> the job; the first rule that matches any frame wins. */
const JOBS: Array<[string, RegExp]> = [
  ['tun read', /^tun_(chr_read_iter|do_read|put_user)/],
  ['tun write (incl. local delivery)', /^tun_(chr_write_iter|get_user)/],
  ['udp send', /^(__sys_sendmmsg|__x64_sys_sendmmsg|udp_sendmsg|__sys_sendmsg)/],
  ['udp recv', /^(__sys_recvmmsg|__x64_sys_recvmmsg|udp_recvmsg)/],
  ['epoll, yield, sleep', /^(do_epoll_wait|__x64_sys_epoll_wait|do_sched_yield|__x64_sys_sched_yield|schedule|ep_poll)/],
  ['csum + segment (user)', /^vxnet::(tcp4_gso_segment|csum|complete_offloaded_csum|vnet_finish_csum|tcp4_super_prepare)/],
  ['coalesce (user)', /^vxnet::TcpCoalescer/],
  ['memcpy (user)', /^__mem(move|cpy)/],
  ['other user', /^vxnet::/],
];

export interface ProfileSummary {
  samples: number;
  byComm: Record<string, number>;
  workerJobs: Record<string, number>;
}

function commKind(comm: string): string {
  if (comm.startsWith('vxnet-')) return 'vxnet workers';
  if (comm === 'swapper') return 'idle + softirq in idle';
  if (comm.startsWith('ksoftirqd')) return 'ksoftirqd';
  if (comm === 'iperf3') return 'iperf3 (both ends, incl. their softirq)';
  return 'other';
}

export function summarise(script: string): ProfileSummary {
  const out: ProfileSummary = { samples: 0, byComm: {}, workerJobs: {} };
  for (const block of script.split(/\n\s*\n/)) {
    const lines = block.split('\n').filter((l) => l.trim());
    if (!lines.length) continue;
    const head = /^\s*(\S.*?)\s+\d+(?:\/\d+)?\s+\[\d+\]/.exec(lines[0]);
    if (!head) continue;
    out.samples++;
    const kind = commKind(head[1]);
    out.byComm[kind] = (out.byComm[kind] ?? 0) + 1;
    if (kind !== 'vxnet workers') continue;
    const frames = lines.slice(1).map((l) => l.trim().split(/\s+/)[1] ?? '').map((f) => f.replace(/\+0x[0-9a-f]+$/, ''));
    let job = 'other kernel';
    outer: for (const f of frames) {
      for (const [name, re] of JOBS) {
        if (re.test(f)) {
          job = name;
          break outer;
        }
      }
    }
    out.workerJobs[job] = (out.workerJobs[job] ?? 0) + 1;
  }
  return out;
}

function main(): void {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith('--'));
  const gi = args.indexOf('--gbytes');
  const gbytes = gi >= 0 ? Number(args[gi + 1]) : undefined;
  if (!file) {
    console.error('usage: node dist/bench/profile.js FILE [--gbytes N]');
    process.exit(2);
  }
  const script = execFileSync('perf', ['script', '-i', file, '-F', 'comm,tid,cpu,ip,sym'], { encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'ignore'] });
  const s = summarise(script);
  // perf's default sampling frequency (4000 Hz) turns samples into CPU seconds.
  const hz = 4000;
  const row = (name: string, n: number) => {
    const pct = ((100 * n) / s.samples).toFixed(1).padStart(5);
    const perGb = gbytes ? `  ${(n / hz / gbytes).toFixed(3).padStart(6)} s/GB` : '';
    console.log(`  ${name.padEnd(40)} ${pct} %${perGb}`);
  };
  console.log(`${file}: ${s.samples} samples`);
  for (const [k, v] of Object.entries(s.byComm).sort((a, b) => b[1] - a[1])) row(k, v);
  console.log('vxnet workers by job:');
  for (const [k, v] of Object.entries(s.workerJobs).sort((a, b) => b[1] - a[1])) row(k, v);
}

if (require.main === module) main();
