// The daemon's control socket: an abstract unix socket (so it is private to the network namespace
// and leaves no file behind) carrying length-prefixed msgpack frames, one request and one reply.
import * as net from 'node:net';
import { Packr } from 'msgpackr';

/** Largest frame either side accepts (a status with 10,000 peers is ~1 MB). */
export const MAX_FRAME = 16 << 20;

export interface ControlRequest {
  op: string;
}

export type ControlReply = { ok: true; result: unknown } | { ok: false; error: string };

const packr = new Packr({ useRecords: false, mapsAsObjects: true });

function frame(value: unknown): Buffer {
  const body = packr.pack(value);
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/** Collects one frame from a stream; rejects oversize or truncated frames. */
function readFrame(sock: net.Socket, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error(`no reply within ${timeoutMs} ms`)), timeoutMs);
    const done = () => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', fail);
    };
    function fail(err: Error) {
      done();
      reject(err);
    }
    function onEnd() {
      fail(new Error('connection closed before a whole message arrived'));
    }
    function onData(chunk: Buffer) {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 4) return;
      const len = buf.readUInt32BE(0);
      if (len > MAX_FRAME) return fail(new Error(`message of ${len} bytes exceeds ${MAX_FRAME}`));
      if (buf.length < 4 + len) return;
      done();
      try {
        resolve(packr.unpack(buf.subarray(4, 4 + len)));
      } catch (err) {
        reject(new Error(`undecodable message: ${(err as Error).message}`));
      }
    }
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', fail);
  });
}

export type ControlHandler = (req: ControlRequest) => Promise<unknown> | unknown;

export class ControlServer {
  private constructor(
    readonly name: string,
    private readonly server: net.Server,
  ) {}

  /** Listens on abstract socket `name`; fails with EADDRINUSE when another daemon holds it. */
  static listen(name: string, handler: ControlHandler): Promise<ControlServer> {
    const server = net.createServer((sock) => {
      sock.on('error', () => sock.destroy());
      readFrame(sock, 5000).then(
        async (msg) => {
          let reply: ControlReply;
          if (typeof msg !== 'object' || msg === null || typeof (msg as ControlRequest).op !== 'string') {
            reply = { ok: false, error: 'request must be {op: string}' };
          } else {
            try {
              reply = { ok: true, result: await handler(msg as ControlRequest) };
            } catch (err) {
              reply = { ok: false, error: (err as Error).message };
            }
          }
          sock.end(frame(reply));
        },
        () => sock.destroy(),
      );
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: `\0${name}` }, () => {
        server.off('error', reject);
        resolve(new ControlServer(name, server));
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Thrown when no daemon listens on the socket (as opposed to a daemon answering with an error). */
export class NoDaemonError extends Error {
  constructor(readonly socketName: string) {
    super(`no vxnet daemon is listening on control socket @${socketName} in this network namespace`);
    this.name = 'NoDaemonError';
  }
}

/** Sends one request and returns the daemon's result; throws NoDaemonError or the daemon's error. */
export async function controlRequest(name: string, req: ControlRequest, timeoutMs = 5000): Promise<unknown> {
  const sock = net.createConnection({ path: `\0${name}` });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? new NoDaemonError(name) : err);
    });
  });
  try {
    sock.write(frame(req));
    const reply = (await readFrame(sock, timeoutMs)) as ControlReply;
    if (!reply || typeof reply !== 'object' || typeof reply.ok !== 'boolean') throw new Error('malformed reply from daemon');
    if (!reply.ok) throw new Error(`daemon: ${reply.error}`);
    return reply.result;
  } finally {
    sock.destroy();
  }
}
