// Where the cycles go: reads a `perf record -a -g` file (bench/datapath.ts --perf) and splits the
// samples by process kind and, for vxnet's workers, by the job the stack was doing.
//
//   node dist/bench/profile.js FILE [--gbytes N] [--examples N]   (N: gigabytes moved while recording)
//
// Every sample is one tick of CPU time, so shares are of the whole machine's time while recording;
// with --gbytes the table adds CPU seconds per GB moved.
//
// It also splits every process kind's samples into its own work and work it hosts for other network
// stacks (`classifyStack`): on a test bed whose hosts are namespaces of one kernel, the kernel runs
// other stacks' packet processing inside whatever task enabled bottom halves or took the interrupt,
// and tick-based accounting charges it to that task. `--examples N` prints N stacks of each class
// (read them to check the classification).
import { execFileSync } from 'node:child_process';

/**
 * Stack frames (innermost first) -> the job of the innermost frame that matches a rule. The checksum
 * loop is a function of its own (`vxnet::detail::csum_*`), so the coalescer's per-segment
 * verification counts as checksum work, and 'coalesce (user)' is the rest of the coalescer.
 */
const JOBS: Array<[string, RegExp]> = [
  ['tun read', /^tun_(chr_read_iter|do_read|put_user)/],
  ['tun write (incl. local delivery)', /^tun_(chr_write_iter|get_user)/],
  ['udp send', /^(__sys_sendmmsg|__x64_sys_sendmmsg|udp_sendmsg|__sys_sendmsg)/],
  ['udp recv', /^(__sys_recvmmsg|__x64_sys_recvmmsg|udp_recvmsg)/],
  ['epoll, yield, sleep', /^(do_epoll_wait|__x64_sys_epoll_wait|do_sched_yield|__x64_sys_sched_yield|schedule|ep_poll)/],
  ['checksums + segment (user)', /^vxnet::(detail::csum|tcp4_gso_segment|csum|complete_offloaded_csum|vnet_finish_csum|tcp4_super_prepare)/],
  ['coalesce (user)', /^vxnet::TcpCoalescer/],
  ['memcpy (user)', /^__mem(move|cpy)/],
  ['other user', /^vxnet::/],
];

export interface ProfileSummary {
  samples: number;
  byComm: Record<string, number>;
  workerJobs: Record<string, number>;
  /** vxnet workers' own samples (no hosted work) by job. */
  workerOwnJobs: Record<string, number>;
  /** Process kind -> own/hosted class (`StackClass.label`) -> samples. */
  split: Record<string, Record<string, number>>;
  /** Process kind -> own samples whose leaf is a kernel copy to or from user memory. */
  ownCopies: Record<string, number>;
  /** Process kind -> hosted samples by `in <context>: <what>` (`hostedWhat`). */
  hostedWhat: Record<string, Record<string, number>>;
  /** With examples > 0: class label -> up to that many stacks (outermost first). */
  examples: Record<string, string[]>;
}

/** Where the task hosting other stacks' work was when it started running it. */
export type HostContext = 'send' | 'tun write' | 'tun read' | 'recv' | 'epoll/sched' | 'interrupt' | 'kthread' | 'idle' | 'other';

export interface StackClass {
  hosted: boolean;
  /** For hosted work: the task's context when the other stack's work began. */
  context?: HostContext;
  /**
   * softirq: under a softirq entry (bottom halves run at local_bh_enable or interrupt exit, or a
   * softirq/NAPI kthread); rx: a packet handed to the receive path in process context (a TUN write
   * calls netif_receive_skb itself); hardirq: the interrupt handler itself.
   */
  via?: 'softirq' | 'rx' | 'hardirq';
  label: string;
}

/** Frames that begin bottom-half (softirq) execution: everything inside them is hosted. */
const SOFTIRQ_ENTRY = /^(handle_softirqs|__do_softirq|do_softirq(\.part\.\d+)?|do_softirq_own_stack|run_ksoftirqd|napi_threaded_poll|napi_threaded_poll_loop|net_rx_action)$/;
/** Frames that hand a packet to a receive path in process context (the TUN write's netif_receive_skb). */
const RX_ENTRY = /^(netif_receive_skb|netif_receive_skb_list_internal|netif_receive_skb_list|__netif_receive_skb|__netif_receive_skb_one_core|__netif_receive_skb_core(\.constprop\.\d+)?|__netif_receive_skb_list_core|process_backlog|__napi_poll|napi_gro_receive|napi_gro_frags|gro_receive_skb|tun_rx_batched)$/;
/** Softirq entries that are a kthread of their own (ksoftirqd, threaded NAPI). */
const KTHREAD_SOFTIRQ = /^(run_ksoftirqd|napi_threaded_poll|napi_threaded_poll_loop)$/;
/** Hard interrupt entry (the handler, and softirq run at its exit). */
const IRQ_ENTRY = /^(asm_sysvec_\w+|asm_common_interrupt|asm_exc_\w+_interrupt|sysvec_\w+|common_interrupt|__irq_exit_rcu|irq_exit_rcu)$/;
/** Context markers, nearest outward from the boundary wins. */
const CONTEXTS: Array<[HostContext, RegExp]> = [
  ['interrupt', IRQ_ENTRY],
  ['tun write', /^(tun_get_user|tun_chr_write_iter)$/],
  ['tun read', /^(tun_do_read|tun_chr_read_iter|tun_put_user)$/],
  ['send', /^(udp_sendmsg|udpv6_sendmsg|__sys_sendmmsg|__x64_sys_sendmmsg|__sys_sendmsg|__x64_sys_sendmsg|__sys_sendto|__x64_sys_sendto|tcp_sendmsg|tcp_sendmsg_locked|sock_write_iter)$/],
  ['recv', /^(udp_recvmsg|__sys_recvmmsg|__x64_sys_recvmmsg|do_recvmmsg|__sys_recvmsg|__sys_recvfrom|__x64_sys_recvfrom|tcp_recvmsg|tcp_recvmsg_locked|sock_read_iter)$/],
  ['epoll/sched', /^(do_epoll_wait|__x64_sys_epoll_wait|ep_poll|do_sched_yield|__x64_sys_sched_yield|schedule|__schedule)$/],
  ['kthread', /^(run_ksoftirqd|napi_threaded_poll|napi_threaded_poll_loop|smpboot_thread_fn|kthread)$/],
  ['idle', /^(do_idle|cpu_startup_entry|default_idle_call|cpuidle_idle_call)$/],
];

/**
 * Own work vs work hosted for other stacks, from one sample's frames (innermost first, offsets
 * stripped). The innermost boundary decides: the first frame, walking outward from the leaf, that
 * enters a softirq, a process-context receive (netif_receive_skb from a TUN write) or an interrupt.
 * Everything inside it is hosted; the nearest context marker outside it says where it was hosted
 * (our send, our TUN write, interrupt exit, ...). No boundary: the task's own work.
 */
export function classifyStack(frames: readonly string[]): StackClass {
  let b = -1;
  let via: StackClass['via'];
  for (let i = 0; i < frames.length; i++) {
    const f = frames[i];
    if (SOFTIRQ_ENTRY.test(f)) {
      via = 'softirq';
    } else if (RX_ENTRY.test(f)) {
      via = 'rx';
    } else if (IRQ_ENTRY.test(f)) {
      via = 'hardirq';
    } else continue;
    b = i;
    break;
  }
  if (b < 0) return { hosted: false, label: 'own' };
  // A receive entry inside softirq (process_backlog under net_rx_action, or the bridge's netfilter
  // re-entering netif_receive_skb from br_handle_frame_finish) is softirq work: walk outward to the
  // first softirq entry or context marker, whichever comes first.
  if (via === 'rx') {
    for (let j = b + 1; j < frames.length; j++) {
      if (SOFTIRQ_ENTRY.test(frames[j])) {
        via = 'softirq';
        b = j;
        break;
      }
      if (CONTEXTS.some(([, re]) => re.test(frames[j]))) break;
    }
  }
  // A hard interrupt hosts in interrupt context; softirq run by its own kthread, in that kthread;
  // otherwise the nearest context marker outside the boundary says where the work was hosted.
  let context: HostContext = 'other';
  if (via === 'hardirq') context = 'interrupt';
  else if (KTHREAD_SOFTIRQ.test(frames[b])) context = 'kthread';
  else {
    const at = frames.slice(b + 1).find((f) => CONTEXTS.some(([, re]) => re.test(f)));
    if (at !== undefined) context = CONTEXTS.find(([, re]) => re.test(at))![0];
  }
  const how = via === 'rx' ? 'receive path in process context' : via === 'hardirq' ? 'hard interrupt' : 'softirq';
  return { hosted: true, context, via, label: `hosted: ${how} in ${context}` };
}

/** What hosted work was doing: the innermost protocol frame, walking outward from the leaf. */
const WHAT: Array<[string, RegExp]> = [
  ['TCP receive + ACK generation (tcp_v4_rcv)', /^tcp_v4_rcv$/],
  ['UDP receive into a socket (__udp4_lib_rcv)', /^(__udp4_lib_rcv|udp_rcv|udp_unicast_rcv_skb|udp_queue_rcv_skb)$/],
  ['TUN transmit (tun_net_xmit)', /^tun_net_xmit$/],
  ['vxlan decap/encap (kernel)', /^(vxlan_rcv|vxlan_xmit|vxlan_xmit_one|gro_cell_poll|udp_tunnel_xmit_skb)$/],
  ['bridge (br_*)', /^(br_handle_frame|br_dev_xmit|br_forward|__br_forward|br_nf_pre_routing|br_handle_frame_finish)$/],
  ['IP forward / output', /^(ip_forward|ip_forward_finish|ip_output|ip_finish_output2|__ip_finish_output)$/],
  ['IP receive', /^(ip_rcv|ip_rcv_finish|ip_local_deliver|ip_list_rcv)$/],
  ['veth', /^(veth_xmit|veth_poll)$/],
  ['timers (TCP pacing, hrtimers)', /^(hrtimer_run_softirq|run_timer_softirq|tcp_pace_kick|__hrtimer_run_queues)$/],
  ['RCU', /^(rcu_core|rcu_core_si|rcu_do_batch)$/],
  ['skb freeing', /^(skb_defer_free_flush|napi_consume_skb|kfree_skb|consume_skb)/],
  ['scheduler (wakeups, ticks)', /^(try_to_wake_up|sched_tick|update_process_times|tick_nohz_handler|scheduler_tick)$/],
];
export function hostedWhat(frames: readonly string[]): string {
  for (const f of frames) for (const [name, re] of WHAT) if (re.test(f)) return name;
  return 'other';
}

/** Leaf frames of the kernel's copies between user memory and skbs (TUN read/write, socket send/recv). */
const KERNEL_COPY = /^(_copy_from_iter|_copy_to_iter|copy_page_from_iter|copy_page_to_iter|rep_movs_alternative|copy_user_\w+|__copy_user\w*)$/;

/** One `perf script -F comm,tid,cpu,ip,sym` block: the comm and the frames (innermost first). */
export function parseBlock(block: string): { comm: string; frames: string[] } | undefined {
  const lines = block.split('\n').filter((l) => l.trim());
  if (!lines.length) return undefined;
  const head = /^\s*(\S.*?)\s+\d+(?:\/\d+)?\s+\[\d+\]/.exec(lines[0]);
  if (!head) return undefined;
  const frames = lines.slice(1).map((l) => l.trim().split(/\s+/)[1] ?? '').map((f) => f.replace(/\+0x[0-9a-f]+$/, ''));
  return { comm: head[1], frames };
}

function commKind(comm: string): string {
  if (comm.startsWith('vxnet-')) return 'vxnet workers';
  if (comm === 'swapper') return 'idle + softirq in idle';
  if (comm.startsWith('ksoftirqd')) return 'ksoftirqd';
  if (comm === 'iperf3') return 'iperf3 (both ends, incl. their softirq)';
  return 'other';
}

export function summarise(script: string, examples = 0): ProfileSummary {
  const out: ProfileSummary = { samples: 0, byComm: {}, workerJobs: {}, workerOwnJobs: {}, ownCopies: {}, split: {}, hostedWhat: {}, examples: {} };
  const bump = (m: Record<string, Record<string, number>>, k: string, l: string) => {
    const r = (m[k] ??= {});
    r[l] = (r[l] ?? 0) + 1;
  };
  let seen = 0;
  for (const block of script.split(/\n\s*\n/)) {
    const p = parseBlock(block);
    if (!p) continue;
    out.samples++;
    const kind = commKind(p.comm);
    out.byComm[kind] = (out.byComm[kind] ?? 0) + 1;
    const { frames } = p;
    const cls = classifyStack(frames);
    bump(out.split, kind, cls.label);
    if (cls.hosted) bump(out.hostedWhat, kind, `in ${cls.context}: ${hostedWhat(frames)}`);
    else if (KERNEL_COPY.test(frames[0] ?? '')) out.ownCopies[kind] = (out.ownCopies[kind] ?? 0) + 1;
    // Examples: every 97th sample of a class until enough (spread over the recording).
    if (examples > 0 && (kind === 'vxnet workers' || kind.startsWith('iperf3')) && seen++ % 97 === 0) {
      const key = `${kind} | ${cls.label}`;
      const ex = (out.examples[key] ??= []);
      if (ex.length < examples) ex.push([...frames].reverse().join(' ; '));
    }
    if (kind !== 'vxnet workers') continue;
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
    if (!cls.hosted) out.workerOwnJobs[job] = (out.workerOwnJobs[job] ?? 0) + 1;
  }
  return out;
}

function main(): void {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith('--'));
  const gi = args.indexOf('--gbytes');
  const gbytes = gi >= 0 ? Number(args[gi + 1]) : undefined;
  const ei = args.indexOf('--examples');
  const examples = ei >= 0 ? Number(args[ei + 1]) : 0;
  if (!file || (ei >= 0 && !(examples >= 0))) {
    console.error('usage: node dist/bench/profile.js FILE [--gbytes N] [--examples N]');
    process.exit(2);
  }
  const script = execFileSync('perf', ['script', '-i', file, '-F', 'comm,tid,cpu,ip,sym'], { encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'ignore'] });
  const s = summarise(script, examples);
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
  // Own work vs work hosted for other stacks, for every process kind that did network work.
  console.log('own vs hosted (innermost softirq / receive / interrupt boundary of each stack):');
  for (const kind of Object.keys(s.split).sort((a, b) => (s.byComm[b] ?? 0) - (s.byComm[a] ?? 0))) {
    const r = s.split[kind];
    const total = Object.values(r).reduce((x, y) => x + y, 0);
    const hosted = total - (r.own ?? 0);
    if (total < s.samples / 200) continue;
    console.log(`${kind}:`);
    row(kind.startsWith('idle') ? '  idle (no boundary)' : '  own', r.own ?? 0);
    row('    of which kernel copies (user <-> skb)', s.ownCopies[kind] ?? 0);
    row('  hosted, total', hosted);
    for (const [k, v] of Object.entries(r).filter(([k]) => k !== 'own').sort((a, b) => b[1] - a[1])) row(`    ${k.replace(/^hosted: /, '')}`, v);
  }
  const w = s.split['vxnet workers'];
  if (w) {
    const sum = (re: RegExp) => Object.entries(w).filter(([k]) => re.test(k)).reduce((n, [, v]) => n + v, 0);
    console.log('vxnet workers, own vs hosted:');
    row('own (user, copies, syscalls, epoll/sched)', w.own ?? 0);
    row('(a) hosted in our send (peer underlay rx)', sum(/^hosted: .* in send$/));
    row('(b) hosted in our TUN write (local stack)', sum(/^hosted: .* in tun write$/));
    row('    of which host forwarding, process ctx', sum(/^hosted: receive path in process context in tun write$/));
    row('(c) hosted elsewhere (irq exit, other)', sum(/^hosted: /) - sum(/^hosted: .* in (send|tun write)$/));
  }
  if (w) {
    console.log('vxnet workers, own work by job:');
    for (const [k, v] of Object.entries(s.workerOwnJobs).sort((a, b) => b[1] - a[1])) row(`  ${k}`, v);
  }
  for (const kind of ['vxnet workers', 'iperf3 (both ends, incl. their softirq)']) {
    const r = s.hostedWhat[kind];
    if (!r) continue;
    console.log(`${kind}, hosted work by where it ran and what it was doing (innermost protocol frame; rows >= 0.2 %):`);
    for (const [k, v] of Object.entries(r).sort((a, b) => b[1] - a[1])) if (v >= s.samples / 500) row(`  ${k}`, v);
  }
  for (const [k, ex] of Object.entries(s.examples).sort()) {
    console.log(`examples: ${k}`);
    for (const e of ex) console.log(`    ${e}`);
  }
}

if (require.main === module) main();
