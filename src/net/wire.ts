// flannel's wire constants, owned here once: default UDP ports, what each encapsulation adds to a
// packet, and the VNI's width. A leaf module: the backends, the config parser, the datapath face and
// the Docker driver read them without loading the native addon.

export type Encap = 'udp' | 'vxlan';

/** Default UDP ports: flannel udp 8285; VXLAN 8472 (the Linux kernel's, which flannel uses, not IANA's 4789). */
export const DEFAULT_PORT: Readonly<Record<Encap, number>> = Object.freeze({ udp: 8285, vxlan: 8472 });

/** Underlay bytes each encapsulation adds: outer IPv4 + UDP (+ VXLAN header + inner Ethernet). */
export const ENCAP_OVERHEAD: Readonly<Record<Encap, number>> = Object.freeze({ udp: 20 + 8, vxlan: 20 + 8 + 8 + 14 });

/** The VXLAN network identifier has 24 bits (RFC 7348). */
export const MAX_VNI = 0xffffff;
