// The `ip -batch` scripts that build a bed. Every line runs with `ip -n <namespace>`, so nothing
// here can ever touch the root namespace; veth peers are created straight into their target.
import { cidrCovers, cidrHost, formatIPv4, parseCidr, parseIPv4 } from '../net/ip';

export const UNDERLAY = parseCidr('198.18.0.0/24');
/** Safety fence: container subnets must lie inside the overlay range reserved for tests. */
export const OVERLAY = parseCidr('10.244.0.0/16');
export const SWITCH_IP = formatIPv4(cidrHost(UNDERLAY, 254));
export const MAX_HOSTS = 253;

export const underlayIp = (index: number): string => formatIPv4(cidrHost(UNDERLAY, index));
/** Switch-side port of host `index`'s underlay veth. */
export const switchPort = (index: number): string => `p${index}`;

export function switchScript(): string[] {
  return ['link set lo up', 'link add name br0 type bridge', 'link set br0 up', `addr add ${SWITCH_IP}/${UNDERLAY.prefixLen} dev br0`];
}

/** Run in the switch namespace: one veth per host, its `eth0` end born inside the host. */
export function wireScript(index: number, hostNs: string, mtu: number): string[] {
  const port = switchPort(index);
  return [`link add name ${port} mtu ${mtu} type veth peer name eth0 mtu ${mtu} netns ${hostNs}`, `link set ${port} master br0 up`];
}

/** Run in the host namespace: underlay address, docker0, and the container's veth. */
export function hostScript(index: number, containerNs: string): string[] {
  return [
    'link set lo up',
    `addr add ${underlayIp(index)}/${UNDERLAY.prefixLen} dev eth0`,
    'link set eth0 up',
    'link add name docker0 type bridge',
    'link set docker0 up',
    `link add name veth0 type veth peer name eth0 netns ${containerNs}`,
    'link set veth0 master docker0 up',
  ];
}

export function containerScript(): string[] {
  return ['link set lo up', 'link set eth0 up'];
}

export interface ContainerAddressing {
  gateway: string;
  prefixLen: number;
  containerIp: string;
}

/** Validates a FLANNEL_SUBNET-style "gateway/len" and derives the container address (.2). */
export function containerAddressing(gatewayCidr: string): ContainerAddressing {
  const slash = gatewayCidr.indexOf('/');
  const net = parseCidr(gatewayCidr);
  const gw = parseIPv4(gatewayCidr.slice(0, slash));
  if (!cidrCovers(OVERLAY, net)) throw new Error(`container subnet ${gatewayCidr} is outside the test overlay range 10.244.0.0/16`);
  if (net.prefixLen > 30) throw new Error(`container subnet ${gatewayCidr} is too small for a gateway and a container`);
  const containerIp = cidrHost(net, 2);
  if (gw === net.ip || gw === containerIp) throw new Error(`gateway in ${gatewayCidr} must not be the network address or .2 (the container)`);
  return { gateway: formatIPv4(gw), prefixLen: net.prefixLen, containerIp: formatIPv4(containerIp) };
}

export function hostSubnetScript(a: ContainerAddressing, mtu: number): string[] {
  return [
    `link set veth0 mtu ${mtu}`,
    `link set docker0 mtu ${mtu}`,
    // scope global: keep the IPv6 link-local address, drop the previous subnet's gateway.
    'addr flush dev docker0 scope global',
    `addr add ${a.gateway}/${a.prefixLen} dev docker0`,
    'link set docker0 up',
  ];
}

export function containerSubnetScript(a: ContainerAddressing, mtu: number): string[] {
  return [
    `link set eth0 mtu ${mtu}`,
    'addr flush dev eth0 scope global',
    `addr add ${a.containerIp}/${a.prefixLen} dev eth0`,
    `route replace default via ${a.gateway} dev eth0`,
  ];
}
