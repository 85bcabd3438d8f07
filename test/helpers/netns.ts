// Network namespaces made by tests as separate "hosts" on this machine: a process sleeping in
// a fresh netns, plus a tiny TCP/UDP echo server and client run inside any netns via nsenter.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

export interface Netns {
  pid: number;
  proc: ChildProcess;
  path: string;
  kill(): void;
}

export async function makeNetns(): Promise<Netns> {
  const proc = spawn('unshare', ['--net', '--', 'sleep', 'infinity'], { stdio: 'ignore' });
  const pid = proc.pid;
  if (!pid) throw new Error('unshare failed');
  // Wait until the exec happened (the netns link differs from ours).
  const { readlinkSync } = await import('node:fs');
  const self = readlinkSync('/proc/self/ns/net');
  for (let i = 0; i < 200; i++) {
    try {
      if (readlinkSync(`/proc/${pid}/ns/net`) !== self) break;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return {
    pid,
    proc,
    path: `/proc/${pid}/ns/net`,
    kill: () => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    },
  };
}

export function inNetns(ns: Netns | null, argv: string[]): string[] {
  return ns ? ['nsenter', `--net=${ns.path}`, '--', ...argv] : argv;
}

export function run(argv: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const [f, ...a] = argv;
  const r = spawnSync(f ?? 'false', a, { encoding: 'utf8', input, timeout: 20_000 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

export function must(argv: string[], input?: string): string {
  const r = run(argv, input);
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr.trim() || `exit ${r.status}`}`);
  return r.stdout;
}

const SERVER = `
const net = require('net'), dgram = require('dgram');
const [port, tag] = process.argv.slice(1);
net.createServer((s) => s.end(tag + ' ' + s.remoteAddress.replace(/^::ffff:/, '') + '\\n')).listen(+port, '::', () => process.stdout.write('ready\\n'));
const u = dgram.createSocket({ type: 'udp6' });
u.on('message', (m, r) => u.send(tag + ' ' + r.address.replace(/^::ffff:/, '') + '\\n', r.port, r.address));
u.bind(+port, '::');
`;

/** A TCP+UDP server on PORT (all addresses) answering "TAG <client address>". */
export async function startServer(ns: Netns | null, port: number, tag: string): Promise<ChildProcess> {
  const [f, ...a] = inNetns(ns, [process.execPath, '-e', SERVER, String(port), tag]);
  const proc = spawn(f ?? 'false', a, { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('server did not start')), 10_000);
    proc.stdout?.once('data', () => {
      clearTimeout(t);
      resolve();
    });
    proc.once('exit', () => reject(new Error('server exited')));
  });
  return proc;
}

const CLIENT = `
const net = require('net'), dgram = require('dgram');
const [proto, host, port] = process.argv.slice(1);
const fail = (e) => { process.stdout.write('ERR ' + (e.code || e.message) + '\\n'); process.exit(0); };
setTimeout(() => fail(new Error('timeout')), 3000);
if (proto === 'tcp') {
  const s = net.connect(+port, host); let d = '';
  s.on('data', (b) => d += b); s.on('end', () => { process.stdout.write(d); process.exit(0); }); s.on('error', fail);
} else {
  const u = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  u.on('message', (m) => { process.stdout.write(String(m)); process.exit(0); }); u.on('error', fail);
  u.send('hi', +port, host);
}
`;

/** Connect from inside NS (or the host) and return the server's answer line, or "ERR code". */
export function query(ns: Netns | null, proto: 'tcp' | 'udp', host: string, port: number): string {
  return run(inNetns(ns, [process.execPath, '-e', CLIENT, proto, host, String(port)])).stdout.trim();
}
