// libnetwork's remote driver protocol (docker/libnetwork: docs/remote.md, docs/ipam.md), as dockerd
// 20.10 speaks it: JSON over HTTP POST on a unix socket, one path per call ("/NetworkDriver.Join"),
// an answer of 200 with the response object, or an error status with {"Err": "..."} — dockerd
// shows the text as `Error response from daemon: <Call>: <Err>`. Field names are Go's, verbatim.

/** The paths dockerd calls, by the name of the call. */
export const CALLS = [
  'Plugin.Activate',
  'NetworkDriver.GetCapabilities',
  'NetworkDriver.CreateNetwork',
  'NetworkDriver.AllocateNetwork',
  'NetworkDriver.DeleteNetwork',
  'NetworkDriver.FreeNetwork',
  'NetworkDriver.CreateEndpoint',
  'NetworkDriver.EndpointOperInfo',
  'NetworkDriver.DeleteEndpoint',
  'NetworkDriver.Join',
  'NetworkDriver.Leave',
  'NetworkDriver.DiscoverNew',
  'NetworkDriver.DiscoverDelete',
  'NetworkDriver.ProgramExternalConnectivity',
  'NetworkDriver.RevokeExternalConnectivity',
  'IpamDriver.GetCapabilities',
  'IpamDriver.GetDefaultAddressSpaces',
  'IpamDriver.RequestPool',
  'IpamDriver.ReleasePool',
  'IpamDriver.RequestAddress',
  'IpamDriver.ReleaseAddress',
] as const;
export type Call = (typeof CALLS)[number];

/** Content type of every plugin answer (dockerd's plugins package sends and accepts it). */
export const PLUGIN_CONTENT_TYPE = 'application/vnd.docker.plugins.v1+json';

/**
 * A request dockerd sent that vxnet refuses; `option` names what the user should change (the
 * `docker network create`/`run` flag or option), and is the first word of the message.
 */
export class DockerRequestError extends Error {
  constructor(
    readonly option: string,
    readonly reason: string,
    /** HTTP status of the answer (dockerd treats every non-200 as an error). */
    readonly status = 400,
  ) {
    super(`${option}: ${reason}`);
    this.name = 'DockerRequestError';
  }
}

/** Docker's error shape. */
export interface ErrorResponse {
  Err: string;
}

// ---- Plugin ------------------------------------------------------------------------------------

export interface ActivateResponse {
  Implements: string[];
}

// ---- NetworkDriver -----------------------------------------------------------------------------

export interface CapabilitiesResponse {
  /** "local": every host's dockerd keeps its own network object ("global" needs a swarm manager). */
  Scope: 'local' | 'global';
  ConnectivityScope?: 'local' | 'global';
}

export interface IPAMData {
  AddressSpace: string;
  /** The network's range, "10.250.0.0/16". */
  Pool: string;
  /** "10.250.3.1/24": what IPAM answered for the gateway request. */
  Gateway?: string;
  AuxAddresses?: Record<string, string> | null;
}

export interface CreateNetworkRequest {
  NetworkID: string;
  /**
   * "com.docker.network.generic" holds the driver options (`-o KEY=VALUE`); dockerd adds
   * "com.docker.network.enable_ipv6" and, for internal networks, "com.docker.network.internal".
   */
  Options?: Record<string, unknown> | null;
  IPv4Data?: IPAMData[] | null;
  IPv6Data?: IPAMData[] | null;
}

export interface DeleteNetworkRequest {
  NetworkID: string;
}

export interface EndpointInterface {
  Address?: string;
  AddressIPv6?: string;
  MacAddress?: string;
}

export interface CreateEndpointRequest {
  NetworkID: string;
  EndpointID: string;
  Interface?: EndpointInterface | null;
  Options?: Record<string, unknown> | null;
}

export interface CreateEndpointResponse {
  /** Only fields dockerd left empty may be set (an address or MAC it sent must not come back). */
  Interface: EndpointInterface;
}

export interface EndpointRequest {
  NetworkID: string;
  EndpointID: string;
}

export interface EndpointOperInfoResponse {
  Value: Record<string, unknown>;
}

export interface JoinRequest {
  NetworkID: string;
  EndpointID: string;
  /** Path of the container's network namespace (valid only in dockerd's mount namespace). */
  SandboxKey: string;
  Options?: Record<string, unknown> | null;
}

/** libnetwork's route types: 0 = via NextHop, 1 = on-link. */
export const ROUTE_NEXTHOP = 0;
export const ROUTE_CONNECTED = 1;

export interface StaticRoute {
  Destination: string;
  RouteType: number;
  NextHop?: string;
}

export interface JoinResponse {
  /** SrcName: the interface dockerd moves into the container; DstPrefix: its new name's prefix ("eth"). */
  InterfaceName: { SrcName: string; DstPrefix: string };
  /** No Gateway: the container keeps Docker's docker_gwbridge as its default route (see docs/docker.md). */
  Gateway?: string;
  GatewayIPv6?: string;
  StaticRoutes?: StaticRoute[];
  DisableGatewayService?: boolean;
}

export interface DiscoveryRequest {
  DiscoveryType: number;
  DiscoveryData: unknown;
}

export interface ExternalConnectivityRequest {
  NetworkID: string;
  EndpointID: string;
  Options?: Record<string, unknown> | null;
}

// ---- IpamDriver --------------------------------------------------------------------------------

export interface IpamCapabilitiesResponse {
  RequiresMACAddress: boolean;
  RequiresRequestReplay?: boolean;
}

export interface AddressSpacesResponse {
  LocalDefaultAddressSpace: string;
  GlobalDefaultAddressSpace: string;
}

export interface RequestPoolRequest {
  AddressSpace: string;
  /** `--subnet`; empty: the driver picks a range. */
  Pool?: string;
  /** `--ip-range`. */
  SubPool?: string;
  /** `--ipam-opt KEY=VALUE`. */
  Options?: Record<string, string> | null;
  V6?: boolean;
}

export interface RequestPoolResponse {
  PoolID: string;
  Pool: string;
  Data: Record<string, string>;
}

export interface ReleasePoolRequest {
  PoolID: string;
}

export interface RequestAddressRequest {
  PoolID: string;
  /** `--ip` (or `--gateway` for the gateway request); empty: the driver picks one. */
  Address?: string;
  /** {"RequestAddressType": "com.docker.network.gateway"} for the network's gateway. */
  Options?: Record<string, string> | null;
}

export interface RequestAddressResponse {
  /** "a.b.c.d/len": the prefix length becomes the container interface's. */
  Address: string;
  Data: Record<string, string>;
}

export interface ReleaseAddressRequest {
  PoolID: string;
  Address: string;
}

/** Options dockerd itself puts into requests. */
export const OPT_GENERIC = 'com.docker.network.generic';
export const OPT_ENABLE_IPV6 = 'com.docker.network.enable_ipv6';
export const OPT_INTERNAL = 'com.docker.network.internal';
export const OPT_REQUEST_ADDRESS_TYPE = 'RequestAddressType';
export const GATEWAY_ADDRESS_TYPE = 'com.docker.network.gateway';
/** Docker's standard driver option for the MTU (`-o com.docker.network.driver.mtu=1400`). */
export const OPT_DRIVER_MTU = 'com.docker.network.driver.mtu';
