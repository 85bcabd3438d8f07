// The image locks a running container holds (systemd's image_path_lock(): a global lock file
// /run/systemd/nspawn/locks/inode-DEV:INO and a local .#NAME.lck next to the image) exist while
// it runs and are removed by the supervisor at its end, as systemd-nspawn's release_lock_file()
// does; before, one pair of files stayed behind per image ever started.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { copyImage, debianImage } from '../helpers/raw-images.js';

const NSPAWN = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
const dir = mkdtempSync('/tmp/mctl-image-locks-');
/** Gates of containers that may still run: opened on the way out, so a failed test ends them. */
const running: string[] = [];
after(() => {
  for (const gate of running) spawnSync('touch', [gate]);
  spawnSync('sleep', ['0.5']);
  rmSync(dir, { recursive: true, force: true });
});

function lockFiles(image: string): { global: string; local: string } {
  const st = statSync(image); // systemd names it by st_dev and st_ino as plain numbers
  return { global: `/run/systemd/nspawn/locks/inode-${st.dev}:${st.ino}`, local: join(dir, `.#${image.split('/').pop()}.lck`) };
}

test('a writable and a read-only start: lock files held while running, removed at the end', async () => {
  const image = copyImage(debianImage('gpt'), join(dir, 't-locks.raw'));
  const { global, local } = lockFiles(image);
  for (const readOnly of [false, true]) {
    const gate = join(dir, `go-${readOnly}`);
    const args = ['-q', '--register=no', '--console=pipe', ...(readOnly ? ['--read-only'] : []), `--bind-ro=${dir}:/mnt`, '-i', image,
      '/bin/sh', '-c', `echo up; while [ ! -e /mnt/${gate.split('/').pop()} ]; do sleep 0.05; done`];
    const child = spawn(NSPAWN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    running.push(gate);
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`exited ${code} before running: ${err}`)));
    });
    assert.ok(existsSync(global), `global lock ${global} while running`);
    assert.ok(existsSync(local), `local lock ${local} while running`);
    spawnSync('touch', [gate]);
    const code = await new Promise((resolve) => child.once('exit', resolve));
    assert.equal(code, 0, err);
    assert.equal(existsSync(global), false, 'global lock file removed at the end');
    assert.equal(existsSync(local), false, 'local lock file removed at the end');
  }
});
