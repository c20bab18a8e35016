// Bed prefixes encode who owns them, so leftovers from a crashed run can be recognised and
// removed without ever touching a bed that a live process (ours or another) is still using.
import { randomInt } from 'node:crypto';
import { readlinkSync } from 'node:fs';

/** Fixed widths keep the fields separable: pid_max is at most 2^22, i.e. 5 base-36 digits. */
const PID_WIDTH = 5;
const TAG_RE = /^[a-z0-9]{1,8}$/;
const NS_RE = /^vx([0-9a-z]{5})([0-9a-z]{2})[0-9a-z]{2}(?:-[a-z0-9]{1,8})?-(?:ul|h[1-9][0-9]*c?|x[a-z0-9]{1,8})$/;

/**
 * Two base-36 digits derived from our PID namespace: a pid is only meaningful inside the PID
 * namespace that issued it, so a bed from another PID namespace is never judged by our pids.
 */
export function pidNamespaceTag(): string {
  let id = 0;
  try {
    const m = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'));
    if (m) id = Number(m[1]);
  } catch {
    // No /proc/self/ns/pid: every bed then shares tag "00", which is still self-consistent.
  }
  return (id % 1296).toString(36).padStart(2, '0');
}

export function validateTag(tag: string): void {
  if (!TAG_RE.test(tag)) throw new Error(`bed tag must match ${TAG_RE}: ${JSON.stringify(tag)}`);
}

/** Prefixes handed out by this process, so two beds created concurrently never share one. */
const issued = new Set<string>();

/**
 * `vx` + owner pid (5) + pid-namespace tag (2) + random (2), then `-tag` if given. A prefix is
 * never reused, nor one with namespaces still present (e.g. left by a dead process with our pid).
 */
export function makePrefix(pid: number = process.pid, tag?: string, existing: () => string[] = () => []): string {
  if (tag !== undefined) validateTag(tag);
  const head = `vx${pid.toString(36).padStart(PID_WIDTH, '0')}${pidNamespaceTag()}`;
  const present = existing();
  for (let attempt = 0; attempt < 200; attempt++) {
    const rand = randomInt(36 * 36).toString(36).padStart(2, '0');
    const prefix = tag === undefined ? `${head}${rand}` : `${head}${rand}-${tag}`;
    if (issued.has(prefix) || present.some((n) => n.startsWith(`${prefix}-`))) continue;
    issued.add(prefix);
    return prefix;
  }
  throw new Error(`no free bed prefix for pid ${pid}: run NetBed.cleanupStale() or delete old ${head}* namespaces`);
}

export interface NsOwner {
  pid: number;
  pidNsTag: string;
}

/** The owner encoded in a bed namespace name, or undefined for names that are not ours. */
export function ownerOf(nsName: string): NsOwner | undefined {
  const m = NS_RE.exec(nsName);
  if (!m) return undefined;
  return { pid: parseInt(m[1], 36), pidNsTag: m[2] };
}

export const switchNsName = (prefix: string): string => `${prefix}-ul`;
export const hostNsName = (prefix: string, index: number): string => `${prefix}-h${index}`;
export const containerNsName = (prefix: string, index: number): string => `${prefix}-h${index}c`;
/** An extra namespace of a bed (NetBed.addNamespace), e.g. one network's side of a host. */
export const extraNsName = (prefix: string, label: string): string => `${prefix}-x${label}`;
