// A few calls of the Docker Engine API over its unix socket (node:http): the network's name (dockerd
// does not tell drivers), and creating/removing networks for --docker-sync-networks.
import { request } from 'node:http';

export const DEFAULT_ENGINE_SOCKET = '/var/run/docker.sock';

/** The socket of DOCKER_HOST ("unix:///path"), undefined when unset; other schemes are refused. */
export function engineSocketFromDockerHost(value: string | undefined): string | undefined {
  if (value === undefined || value === '') return undefined;
  const m = /^unix:\/\/(\/.+)$/.exec(value);
  if (!m) throw new Error(`DOCKER_HOST: only unix:///path sockets are supported, got ${JSON.stringify(value)}`);
  return m[1];
}

export class EngineError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

export interface EngineNetwork {
  Id: string;
  Name: string;
  Driver: string;
  IPAM?: { Driver?: string; Options?: Record<string, string> | null; Config?: Array<{ Subnet?: string; Gateway?: string }> | null };
  Containers?: Record<string, { Name?: string; EndpointID?: string; IPv4Address?: string }> | null;
}

export interface EngineApi {
  getNetwork(id: string): Promise<EngineNetwork | undefined>;
  listNetworks(driver: string): Promise<EngineNetwork[]>;
  createNetwork(spec: { name: string; driver: string; subnet: string; ipamOptions: Record<string, string> }): Promise<string>;
  deleteNetwork(id: string): Promise<void>;
}

export class EngineClient implements EngineApi {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 10_000,
  ) {}

  private call(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    return new Promise((resolve, reject) => {
      const text = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers: { Host: 'docker', ...(text !== undefined ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) } : {}) },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const raw = Buffer.concat(chunks).toString('utf8');
            let json: unknown = raw;
            try {
              json = raw === '' ? undefined : JSON.parse(raw);
            } catch {
              // Not JSON: keep the text for the error message.
            }
            resolve({ status: res.statusCode ?? 0, json });
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`Docker Engine API ${method} ${path}: no answer within ${this.timeoutMs} ms`)));
      req.on('error', (err) => reject(new EngineError(0, `Docker Engine API at ${this.socketPath}: ${err.message}`)));
      if (text !== undefined) req.write(text);
      req.end();
    });
  }

  private fail(what: string, r: { status: number; json: unknown }): never {
    const msg = typeof r.json === 'object' && r.json !== null && 'message' in r.json ? String((r.json as { message: unknown }).message) : String(r.json);
    throw new EngineError(r.status, `Docker Engine API ${what}: ${r.status} ${msg}`);
  }

  async getNetwork(id: string): Promise<EngineNetwork | undefined> {
    const r = await this.call('GET', `/networks/${encodeURIComponent(id)}`);
    if (r.status === 404) return undefined;
    if (r.status !== 200) this.fail(`GET /networks/${id}`, r);
    return r.json as EngineNetwork;
  }

  async listNetworks(driver: string): Promise<EngineNetwork[]> {
    const filters = encodeURIComponent(JSON.stringify({ driver: [driver] }));
    const r = await this.call('GET', `/networks?filters=${filters}`);
    if (r.status !== 200) this.fail('GET /networks', r);
    return r.json as EngineNetwork[];
  }

  async createNetwork(spec: { name: string; driver: string; subnet: string; ipamOptions: Record<string, string> }): Promise<string> {
    const r = await this.call('POST', '/networks/create', {
      Name: spec.name,
      Driver: spec.driver,
      CheckDuplicate: true,
      IPAM: { Driver: spec.driver, Config: [{ Subnet: spec.subnet }], Options: spec.ipamOptions },
    });
    if (r.status !== 201 && r.status !== 200) this.fail(`POST /networks/create ${spec.name}`, r);
    return String((r.json as { Id?: unknown }).Id ?? '');
  }

  async deleteNetwork(id: string): Promise<void> {
    const r = await this.call('DELETE', `/networks/${encodeURIComponent(id)}`);
    if (r.status !== 204 && r.status !== 200 && r.status !== 404) this.fail(`DELETE /networks/${id}`, r);
  }
}
