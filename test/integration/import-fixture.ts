// Shared fixtures for the import integration tests and bench/pull-tar.mjs' sibling: a real
// Debian tarball (the project's debian recipe plus a directory of the entries an OS tree must
// keep: file capabilities, devices, a fifo, ACLs, user xattrs, setuid/setgid/sticky, hard and
// absolute symlinks), a loopback HTTP server, a throwaway GnuPG key, and a tree comparator.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync, copyFileSync, chmodSync, chownSync, linkSync, symlinkSync, utimesSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { debianTree } from '../helpers/images.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const MCTL = join(ROOT, 'bin/mctl');
const CACHE = process.env['MCTL_IMAGE_CACHE'] || '/var/cache/mctl-test';
// top-level, so creating it does not bump the mtime of a directory tar already restored
const EXTRAS_VERSION = 'extras-v2';
export const EXTRAS = 'mctl-extras';

/** Build the directory of special entries under ROOT/opt/mctl-extras. */
export function makeExtras(root: string): void {
  const d = join(root, EXTRAS);
  mkdirSync(d, { recursive: true });
  copyFileSync('/bin/true', join(d, 'ping'));
  execFileSync('setcap', ['cap_net_raw+ep', join(d, 'ping')]);
  writeFileSync(join(d, 'setuid'), 'u');
  chmodSync(join(d, 'setuid'), 0o4755);
  writeFileSync(join(d, 'setgid'), 'g');
  chownSync(join(d, 'setgid'), 0, 5);
  chmodSync(join(d, 'setgid'), 0o2755);
  mkdirSync(join(d, 'sticky'));
  chmodSync(join(d, 'sticky'), 0o1777);
  execFileSync('mknod', [join(d, 'null'), 'c', '1', '3']);
  execFileSync('mknod', [join(d, 'loop9'), 'b', '7', '9']);
  execFileSync('mkfifo', [join(d, 'fifo')]);
  writeFileSync(join(d, 'acl'), 'acl');
  execFileSync('setfacl', ['-m', 'u:1234:rwx,g:5:r', join(d, 'acl')]);
  mkdirSync(join(d, 'acl-default'));
  execFileSync('setfacl', ['-d', '-m', 'u:1234:rx', join(d, 'acl-default')]);
  writeFileSync(join(d, 'xattr'), 'x');
  execFileSync('setfattr', ['-n', 'user.mctl', '-v', 'hello', join(d, 'xattr')]);
  writeFileSync(join(d, 'owned'), 'o');
  chownSync(join(d, 'owned'), 100000, 100001);
  writeFileSync(join(d, 'hard1'), 'h');
  linkSync(join(d, 'hard1'), join(d, 'hard2'));
  linkSync(join(d, 'hard1'), join(d, 'hard3'));
  symlinkSync('/etc/shadow', join(d, 'abs-link'));
  symlinkSync('/nonexistent/x', join(d, 'dangling'));
  writeFileSync(join(d, 'old'), 'old');
  utimesSync(join(d, 'old'), new Date('2001-02-03T04:05:06Z'), new Date('2001-02-03T04:05:06Z'));
}

function cached(key: string, suffix: string, build: (tmp: string) => void): string {
  mkdirSync(CACHE, { recursive: true });
  const path = join(CACHE, `import-${key}${suffix}`);
  if (existsSync(path)) return path;
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    build(tmp);
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
  return path;
}

const TAR_CREATE = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls'];

/** The Debian recipe tree + extras as an uncompressed tar (cached, keyed by tree path). */
export function debianTar(): string {
  const tree = debianTree();
  const key = createHash('sha256').update(`${tree}\n${EXTRAS_VERSION}`).digest('hex').slice(0, 16);
  return cached(`debian-${key}`, '.tar', (tmp) => {
    const extras = mkdtempSync(join(tmpdir(), 'mctl-import-extras-'));
    try {
      makeExtras(extras);
      execFileSync('tar', [...TAR_CREATE, '-cf', tmp, '-C', tree, '.']);
      execFileSync('tar', [...TAR_CREATE, '-rf', tmp, '-C', extras, `./${EXTRAS}`]);
    } finally {
      rmSync(extras, { recursive: true, force: true });
    }
  });
}

/** The same archive compressed (cached next to it). */
export function debianTarball(kind: 'xz' | 'zst' | 'gz' = 'xz'): string {
  const tar = debianTar();
  const key = tar.replace(/^.*import-/, '').replace(/\.tar$/, '');
  return cached(key, `.tar.${kind}`, (tmp) => {
    const args = kind === 'xz' ? ['xz', '-T0', '-3', '-c'] : kind === 'zst' ? ['zstd', '-T0', '-3', '-q', '-c'] : ['gzip', '-c'];
    execFileSync('sh', ['-c', `${args.join(' ')} < "$1" > "$2"`, 'sh', tar, tmp]);
  });
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

// ---------------------------------------------------------------- HTTP server

export interface Route {
  file?: string;
  data?: Buffer | string;
  /** Close the connection after this many body bytes (server gone mid-stream). */
  dropAfter?: number;
  /** Bytes per second (to catch a transfer in flight). */
  rate?: number;
}

export interface TestServer {
  url: string;
  routes: Map<string, Route>;
  requests: string[];
  close(): Promise<void>;
}

export async function startServer(): Promise<TestServer> {
  const routes = new Map<string, Route>();
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent((req.url ?? '/').split('?')[0] ?? '/');
    requests.push(path);
    const route = routes.get(path);
    if (!route) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    const size = route.file ? statSync(route.file).size : Buffer.byteLength(route.data ?? '');
    res.writeHead(200, { 'content-length': String(size), 'content-type': 'application/octet-stream' });
    const source = route.file ? createReadStream(route.file, { highWaterMark: 1 << 16 }) : null;
    if (!source) return res.end(route.data);
    let sent = 0;
    // paused for either reason until both are over (a drain must not cut a rate pause short)
    let blocked = false;
    let waiting = false;
    source.on('data', (chunk: Buffer) => {
      if (route.dropAfter !== undefined && sent + chunk.length > route.dropAfter) {
        res.write(chunk.subarray(0, route.dropAfter - sent));
        source.destroy();
        res.socket?.destroy();
        return;
      }
      sent += chunk.length;
      if (!res.write(chunk)) {
        blocked = true;
        source.pause();
        res.once('drain', () => {
          blocked = false;
          if (!waiting) source.resume();
        });
      }
      if (route.rate) {
        waiting = true;
        source.pause();
        setTimeout(() => {
          waiting = false;
          if (!blocked) source.resume();
        }, (chunk.length / route.rate) * 1000);
      }
    });
    source.on('end', () => res.end());
    res.on('close', () => source.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    routes,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// ---------------------------------------------------------------- GnuPG

export interface TestKey {
  home: string;
  keyring: string;
  /** Detached signature of DATA. */
  sign(data: Buffer | string): Buffer;
  /** Clear-signed DATA. */
  clearsign(data: Buffer | string): Buffer;
}

export function makeKey(dir: string, label: string): TestKey {
  const home = join(dir, `gnupg-${label}`);
  mkdirSync(home, { mode: 0o700 });
  const env = { ...process.env, GNUPGHOME: home };
  execFileSync('gpg', ['--batch', '--quiet', '--passphrase', '', '--quick-gen-key', `mctl test ${label} <${label}@mctl.invalid>`, 'ed25519', 'sign', 'never'], { env, stdio: 'ignore' });
  const keyring = join(dir, `${label}-pubring.gpg`);
  writeFileSync(keyring, execFileSync('gpg', ['--batch', '--export'], { env }));
  const run = (args: string[], data: Buffer | string): Buffer => execFileSync('gpg', ['--batch', '--quiet', '--pinentry-mode', 'loopback', '--passphrase', '', ...args], { env, input: data });
  return {
    home,
    keyring,
    sign: (data) => run(['--detach-sign', '-o', '-'], data),
    clearsign: (data) => run(['--clearsign', '-o', '-'], data),
  };
}

/** Stop the gpg-agent a key's home started (it would outlive the test otherwise). */
export function stopAgent(key: TestKey): void {
  try {
    execFileSync('gpgconf', ['--kill', 'gpg-agent'], { env: { ...process.env, GNUPGHOME: key.home }, stdio: 'ignore' });
  } catch {
    // no agent running
  }
}

// ---------------------------------------------------------------- running mctl

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  pid: number;
}

export function runMctl(args: string[], env: NodeJS.ProcessEnv, options: { input?: Buffer | string; onSpawn?: (pid: number) => void } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MCTL, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('spawn', () => options.onSpawn?.(child.pid!));
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: err, pid: child.pid ?? 0 }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

// ---------------------------------------------------------------- tree comparison

function xattrDump(root: string): string {
  // every xattr of every entry (not following symlinks), ACLs included (system.posix_acl_*)
  try {
    return execFileSync('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: root, maxBuffer: 1 << 28, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch (err) {
    return String((err as { stdout?: string }).stdout ?? '');
  }
}

export interface EntryFacts {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  rdev: number;
  mtime: number;
  target?: string;
  sha256?: string;
}

/** lstat facts + content hash of every entry under ROOT, keyed by relative path. */
export function treeFacts(root: string): Map<string, EntryFacts> {
  const out = new Map<string, EntryFacts>();
  const walk = (rel: string): void => {
    const abs = rel ? join(root, rel) : root;
    const st = lstatSync(abs);
    const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'socket';
    const facts: EntryFacts = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: type === 'dir' ? 0 : st.size, nlink: type === 'dir' ? 0 : st.nlink, rdev: st.rdev, mtime: Math.floor(st.mtimeMs / 1000) };
    if (type === 'symlink') facts.target = readlinkSync(abs);
    if (type === 'file') facts.sha256 = createHash('sha256').update(readFileSync(abs)).digest('hex');
    out.set(rel || '.', facts);
    if (type === 'dir') for (const name of readdirSync(abs).sort()) walk(rel ? `${rel}/${name}` : name);
  };
  walk('');
  return out;
}

/** Differences between two trees (empty = identical): entries, facts, xattrs and ACLs. */
export function compareTrees(a: string, b: string, options: { ignoreRootMtime?: boolean } = {}): string[] {
  const fa = treeFacts(a);
  const fb = treeFacts(b);
  const diffs: string[] = [];
  for (const [path, x] of fa) {
    const y = fb.get(path);
    if (!y) {
      diffs.push(`${path}: only in ${a}`);
      continue;
    }
    for (const key of Object.keys(x) as (keyof EntryFacts)[]) {
      if (key === 'mtime' && path === '.' && options.ignoreRootMtime) continue;
      if (x[key] !== y[key]) diffs.push(`${path}: ${key} ${String(x[key])} != ${String(y[key])}`);
    }
  }
  for (const path of fb.keys()) if (!fa.has(path)) diffs.push(`${path}: only in ${b}`);
  const xa = xattrDump(a);
  const xb = xattrDump(b);
  if (xa !== xb) {
    const la = xa.split('\n');
    const lb = xb.split('\n');
    const first = la.findIndex((l, i) => l !== lb[i]);
    diffs.push(`xattrs differ near: ${la[first]} / ${lb[first]}`);
  }
  return diffs;
}

export function poolListing(pool: string): string[] {
  return existsSync(pool) ? readdirSync(pool).sort() : [];
}
