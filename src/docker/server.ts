// The plugin's HTTP face: node:http on a unix socket (default /run/docker/plugins/vxnet.sock, where
// dockerd looks for plugin sockets). Each POST /<Call> is decoded as JSON and handed to the handler;
// a DockerRequestError becomes {"Err": "<option>: <reason>"} with an error status, as dockerd expects.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../backend/backend';
import { type Call, CALLS, DockerRequestError, PLUGIN_CONTENT_TYPE } from './protocol';

export const DEFAULT_PLUGIN_SOCKET = '/run/docker/plugins/vxnet.sock';

/** Answers one call; the request body is already parsed (an empty body is {}). */
export type CallHandler = (call: Call, body: Record<string, unknown>) => Promise<unknown>;

/** Largest request body accepted (dockerd's requests are a few hundred bytes). */
const MAX_BODY = 1 << 20;

/**
 * Removes a socket left at `file` by an earlier run (dockerd would spend 30 s of retries on every
 * call to a dead one). Anything that is not a socket is left alone and reported.
 */
export function removeStaleSocket(file: string): void {
  let st;
  try {
    st = lstatSync(file);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${file} exists and is not a socket`);
  unlinkSync(file);
}

export class PluginServer {
  private constructor(
    private readonly server: Server,
    readonly socketPath: string,
  ) {}

  /** Listens on `socketPath` (its directory is created; a stale socket there is removed first). */
  static async listen(socketPath: string, handler: CallHandler, log: Logger): Promise<PluginServer> {
    mkdirSync(path.dirname(socketPath), { recursive: true });
    removeStaleSocket(socketPath);
    const server = createServer((req, res) => void serve(req, res, handler, log));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return new PluginServer(server, socketPath);
  }

  /** Stops listening and removes the socket, so dockerd fails fast instead of retrying a dead one. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    try {
      removeStaleSocket(this.socketPath);
    } catch {
      // Someone replaced it with a file: not ours to remove.
    }
  }
}

const KNOWN = new Set<string>(CALLS);

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': PLUGIN_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new DockerRequestError('request', `body larger than ${MAX_BODY} bytes`, 413);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function serve(req: IncomingMessage, res: ServerResponse, handler: CallHandler, log: Logger): Promise<void> {
  const call = (req.url ?? '').replace(/^\//, '').split('?')[0];
  try {
    if (req.method !== 'POST') throw new DockerRequestError('request', `${req.method} ${req.url}: plugin calls are POST`, 405);
    // Unknown calls answer 404, which dockerd reads as "not implemented by this plugin".
    if (!KNOWN.has(call)) throw new DockerRequestError('request', `unknown call ${JSON.stringify(call)}`, 404);
    const text = await readBody(req);
    let body: unknown = {};
    if (text.trim() !== '') {
      try {
        body = JSON.parse(text);
      } catch (err) {
        throw new DockerRequestError('request', `${call}: body is not JSON: ${(err as Error).message}`);
      }
    }
    if (body === null) body = {};
    if (typeof body !== 'object' || Array.isArray(body)) throw new DockerRequestError('request', `${call}: body must be a JSON object`);
    const out = await handler(call as Call, body as Record<string, unknown>);
    reply(res, 200, out ?? {});
  } catch (err) {
    if (err instanceof DockerRequestError) {
      log.warn('docker request refused', { call, error: err.message });
      reply(res, err.status, { Err: err.message });
    } else {
      log.error('docker request failed', { call, error: (err as Error).message });
      reply(res, 500, { Err: `${call}: ${(err as Error).message}` });
    }
  }
}
