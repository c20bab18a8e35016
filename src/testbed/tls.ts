// A throwaway PKI for tests, made with the openssl command: a CA, a server certificate naming the
// etcd address (SAN IP, as Go's TLS requires), and a client certificate. Files only; no network.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface TestPki {
  caFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function keyAndCert(dir: string, name: string, subject: string, ca: { cert: string; key: string } | undefined, ext: string): { cert: string; key: string } {
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.crt`);
  const extFile = path.join(dir, `${name}.ext`);
  writeFileSync(extFile, ext);
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  if (!ca) {
    openssl(['req', '-x509', '-new', '-key', key, '-subj', subject, '-days', '2', '-out', cert, '-extensions', 'v3', '-config', extFile]);
  } else {
    const csr = path.join(dir, `${name}.csr`);
    openssl(['req', '-new', '-key', key, '-subj', subject, '-out', csr]);
    openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-out', cert, '-extfile', extFile, '-extensions', 'v3']);
  }
  return { cert, key };
}

/** Writes a CA, a server cert for `serverIp` and a client cert (CN `clientName`) into `dir`. */
export function makeTestPki(dir: string, serverIp: string, clientName = 'vxnet'): TestPki {
  mkdirSync(dir, { recursive: true });
  const ca = keyAndCert(
    dir,
    'ca',
    '/CN=vxnet test CA',
    undefined,
    '[req]\ndistinguished_name=dn\n[dn]\n[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n',
  );
  const server = keyAndCert(
    dir,
    'server',
    '/CN=etcd',
    ca,
    `[v3]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:${serverIp},IP:127.0.0.1\n`,
  );
  const client = keyAndCert(dir, 'client', `/CN=${clientName}`, ca, '[v3]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n');
  return { caFile: ca.cert, serverCertFile: server.cert, serverKeyFile: server.key, clientCertFile: client.cert, clientKeyFile: client.key };
}

/** True when the openssl command can be run here. */
export function opensslAvailable(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
