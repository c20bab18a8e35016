// /metrics (Prometheus text) and /healthz over plain HTTP, on the daemon's --healthz-ip/--healthz-port.
import * as http from 'node:http';

export interface Health {
  ok: boolean;
  detail: string;
}

export class MetricsServer {
  private constructor(
    private readonly server: http.Server,
    readonly address: string,
  ) {}

  static listen(host: string, port: number, metrics: () => string | Promise<string>, health: () => Health): Promise<MetricsServer> {
    const server = http.createServer((req, res) => {
      const url = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD' }).end();
        return;
      }
      if (url === '/metrics') {
        Promise.resolve()
          .then(metrics)
          .then(
            (body) => res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' }).end(body),
            (err: Error) => res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`${err.message}\n`),
          );
        return;
      }
      try {
        if (url === '/healthz') {
          const h = health();
          res.writeHead(h.ok ? 200 : 503, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`${h.detail}\n`);
        } else {
          res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('try /metrics or /healthz\n');
        }
      } catch (err) {
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`${(err as Error).message}\n`);
      }
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port, exclusive: true }, () => {
        server.off('error', reject);
        const a = server.address();
        const addr = a && typeof a === 'object' ? `${a.address}:${a.port}` : `${host}:${port}`;
        resolve(new MetricsServer(server, addr));
      });
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
