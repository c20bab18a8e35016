// CPU and memory readings from /proc (same PID namespace as the bed's processes, so their pids are
// ours to read even though they run in other network namespaces).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let clkTck: number | undefined;

/** USER_HZ: clock ticks per second of /proc's CPU times. */
export function clockTicks(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** Parses /proc/<pid>/stat text: user + system CPU seconds of the process itself (not children). */
export function parseProcStatCpu(stat: string, ticks: number): number {
  // Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error('malformed /proc/<pid>/stat');
  return (utime + stime) / ticks;
}

/** CPU seconds (user + system) a process has used; undefined once it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  try {
    return parseProcStatCpu(readFileSync(`/proc/${pid}/stat`, 'utf8'), clockTicks());
  } catch {
    return undefined;
  }
}

/** Resident set size in MB (VmRSS); undefined once the process is gone. */
export function processRssMB(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

export interface MachineCpu {
  /** Busy CPU seconds summed over all CPUs (everything but idle and iowait). */
  busy: number;
  total: number;
}

/** Parses the aggregate "cpu" line of /proc/stat. */
export function parseProcStat(text: string, ticks: number): MachineCpu {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) throw new Error('/proc/stat has no cpu line');
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice; guest time is inside user.
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = f[3] + (f[4] ?? 0);
  return { busy: (total - idle) / ticks, total: total / ticks };
}

export function machineCpu(): MachineCpu {
  return parseProcStat(readFileSync('/proc/stat', 'utf8'), clockTicks());
}

/** Sums CPU seconds of the given pids and of every descendant still alive (for iperf3 etc.). */
export function cpuOf(pids: number[]): number {
  let s = 0;
  for (const p of pids) s += processCpuSeconds(p) ?? 0;
  return s;
}
