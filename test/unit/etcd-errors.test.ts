// Startup failures against etcd name the flag to fix: CA, client certificate, password, user, endpoints.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EtcdAuthenticationFailedError, EtcdPermissionDeniedError, GRPCUnavailableError } from 'etcd3';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EtcdRegistry, etcdFailureField, isAccessDenied, RegistryError, TlsFileError } from '../../src/subnet/registry';

const S = { endpoints: ['https://198.18.0.254:2379'], prefix: '/coreos.com/network', caFile: '/etc/ca.pem', certFile: '/etc/c.pem', username: 'vxnet' };
const wrap = (cause: Error) => new RegistryError('get config', S.endpoints, cause);

test('each kind of etcd failure names its flag', () => {
  const auth = etcdFailureField(wrap(new EtcdAuthenticationFailedError('etcdserver: authentication failed, invalid user ID or password')), S);
  assert.deepEqual(auth, { field: '--etcd-password', reason: 'authentication failed for user "vxnet" at https://198.18.0.254:2379' });
  const perm = etcdFailureField(wrap(new EtcdPermissionDeniedError('etcdserver: permission denied')), S);
  assert.equal(perm.field, '--etcd-username');
  assert.match(perm.reason, /^permission denied on \/coreos\.com\/network for user "vxnet"/);
  const ca = etcdFailureField(wrap(new GRPCUnavailableError('14 UNAVAILABLE: No connection established. Last error: Error: self-signed certificate in certificate chain')), S);
  assert.equal(ca.field, '--etcd-cafile');
  assert.match(ca.reason, /certificate signed by unknown authority \(CA \/etc\/ca\.pem\)$/);
  const cert = etcdFailureField(wrap(new GRPCUnavailableError('14 UNAVAILABLE: Last error: 80:error:0A000412:SSL routines:ssl3_read_bytes:sslv3 alert bad certificate:rec_layer_s3.c:1601:SSL alert number 42')), S);
  assert.equal(cert.field, '--etcd-certfile');
  assert.match(cert.reason, /refused our client certificate \(\/etc\/c\.pem\): TLS alert bad certificate$/);
  const down = etcdFailureField(wrap(new GRPCUnavailableError('14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 198.18.0.254:2379. Resolution note: x')), S);
  assert.deepEqual(down, { field: '--etcd-endpoints', reason: 'cannot reach etcd at https://198.18.0.254:2379: 14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 198.18.0.254:2379' });
  const noUser = etcdFailureField(wrap(new Error('3 INVALID_ARGUMENT: etcdserver: user name is empty')), { ...S, username: undefined });
  assert.equal(noUser.field, '--etcd-username');
  assert.ok(isAccessDenied(wrap(new EtcdPermissionDeniedError('x'))));
  assert.ok(!isAccessDenied(wrap(new GRPCUnavailableError('x'))));
});

test('unusable TLS files are refused when the client is made, naming the option', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vxnet-tls-'));
  try {
    const junk = path.join(dir, 'junk.pem');
    writeFileSync(junk, 'not pem at all');
    const make = (o: Record<string, string>) => () => new EtcdRegistry({ endpoints: ['https://198.18.0.254:2379'], ...o });
    assert.throws(make({ caFile: junk }), (e: unknown) => e instanceof TlsFileError && e.option === 'caFile' && /not a PEM certificate/.test(e.reason));
    assert.throws(make({ certFile: junk, keyFile: junk }), (e: unknown) => e instanceof TlsFileError && e.option === 'certFile');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
