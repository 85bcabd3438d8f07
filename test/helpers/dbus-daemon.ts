// A private dbus-daemon for integration tests: a system-type bus on a socket in a temp dir,
// with a policy that lets root own any name (like the real system bus does for services with
// a policy file) and everyone call anything. Tests point programs at it through
// DBUS_SYSTEM_BUS_ADDRESS. Always stop() it (the process is ours; we kill it by PID).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export interface PrivateBus {
  address: string;
  socketPath: string;
  pid: number;
  env: NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

export async function startPrivateBus(options: { restrictOwn?: boolean } = {}): Promise<PrivateBus> {
  const dir = mkdtempSync(join(tmpdir(), 'mctl-bus-'));
  const socketPath = join(dir, 'system_bus_socket');
  const ownRule = options.restrictOwn ? '<allow user="root" own="*"/>' : '<allow own="*"/>';
  writeFileSync(
    join(dir, 'bus.conf'),
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${socketPath}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    ${ownRule}
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow send_type="method_call"/>
  </policy>
</busconfig>
`,
  );
  const child: ChildProcess = spawn('dbus-daemon', ['--config-file', join(dir, 'bus.conf'), '--nofork', '--print-address=1'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const address = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error('dbus-daemon did not start within 10 s')), 10_000);
    rl.once('line', (line) => {
      clearTimeout(timer);
      resolve(line.trim());
    });
    child.once('exit', (code) => reject(new Error(`dbus-daemon exited with ${code}`)));
  });
  const pid = child.pid!;
  return {
    address,
    socketPath,
    pid,
    env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${socketPath}` },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        process.kill(pid, 'SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
