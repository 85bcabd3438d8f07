// pull-tar over HTTPS from a loopback server whose self-signed certificate is trusted only
// through NODE_EXTRA_CA_CERTS. bin/mctl is run as an executable (its #! line hands the variable
// over as MCTL_EXTRA_CA_CERTS, so Node does not parse the bundle at every start): the transfer
// must still trust that CA, and must refuse the server without it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { MCTL } from './import-fixture.js';

let dir: string;
let pool: string;
let server: Server;
let url: string;

before(async () => {
  dir = mkdtempSync('/tmp/mctl-import-https-');
  pool = join(dir, 'pool');
  mkdirSync(pool);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
  const tree = join(dir, 'tree');
  mkdirSync(join(tree, 'etc'), { recursive: true });
  writeFileSync(join(tree, 'etc/os-release'), 'ID=https-test\n');
  execFileSync('tar', ['-czf', join(dir, 'small.tar.gz'), '-C', tree, '.']);
  const body = readFileSync(join(dir, 'small.tar.gz'));
  server = createServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (req, res) => {
    if (req.url !== '/small.tar.gz') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/small.tar.gz`;
});

after(async () => {
  await new Promise((resolve) => server?.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

/** bin/mctl as an executable, so its #! line applies (not `node bin/mctl`). */
function mctl(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(MCTL, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

const baseEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env, MCTL_POOL: pool };
  delete env['NODE_EXTRA_CA_CERTS'];
  delete env['MCTL_EXTRA_CA_CERTS'];
  return env;
};

test('NODE_EXTRA_CA_CERTS is honoured for HTTPS pulls although bin/mctl keeps it from Node\'s start-up', async () => {
  const r = await mctl(['pull-tar', '--verify=no', url, 't-https'], { ...baseEnv(), NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readFileSync(join(pool, 't-https/etc/os-release'), 'utf8'), 'ID=https-test\n');
});

test('without the extra CA the self-signed server is refused in one line and nothing lands', async () => {
  const r = await mctl(['pull-tar', '--verify=no', url, 't-https-untrusted'], baseEnv());
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^mctl: cannot fetch https:\/\/127\.0\.0\.1:\d+\/small\.\S+: DEPTH_ZERO_SELF_SIGNED_CERT\n$/);
  assert.equal(existsSync(join(pool, 't-https-untrusted')), false);
  assert.deepEqual(readdirSync(pool).filter((e) => e.startsWith('.#')), [], 'no work entry left');
});
