// Console modes on a real terminal: util-linux `script` gives the launcher a pty as its
// stdin/stdout, as a user at a terminal would. Interactive relays both ways and ^]^]^] within
// a second kills the container; read-only relays output only; passive shows nothing.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { debianTree } from '../helpers/images.js';

const BIN = fileURLToPath(new URL('../../bin/mctl-nspawn', import.meta.url));
let tree = '';

before(() => {
  tree = debianTree();
});

/** Run the launcher under `script` (a pty), feeding `steps` (delay ms, bytes) to its terminal. */
function onTerminal(args: string[], steps: Array<[number, string]>) {
  const feed = [...steps.map(([ms, bytes]) => `sleep ${ms / 1000}; printf '${bytes}'`), 'true'].join('; ');
  const cmd = [BIN, '--register=no', '--read-only', '-D', tree, ...args].map((a) => `'${a}'`).join(' ');
  const t0 = Date.now();
  const r = spawnSync('bash', ['-c', `(${feed}; sleep 1) | timeout 25 script -qec "${cmd.replace(/"/g, '\\"')}" /dev/null`], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, out: r.stdout.replace(/\r/g, ''), ms: Date.now() - t0 };
}

test('interactive: input reaches the container, output comes back, exit N is the status', () => {
  const r = onTerminal(['-M', 't-nsc-tty', '/bin/bash'], [[1500, 'echo hello-$((6*7))\\r'], [500, 'exit 4\\r']]);
  assert.match(r.out, /hello-42$/m);
  assert.equal(r.status, 4, r.out);
});

test('interactive: ^] three times within a second kills the container', () => {
  const r = onTerminal(['-M', 't-nsc-esc', '/bin/sleep', '60'], [[1500, '\\035\\035\\035']]);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /Container t-nsc-esc terminated by signal KILL/);
  assert.ok(r.ms < 15_000);
});

test('read-only: output is shown, input is not passed on', () => {
  const r = onTerminal(['--console=read-only', '-M', 't-nsc-ro', '/bin/bash', '-c', 'read -t 3 x; echo "got-[$x]"'], [[1000, 'typed\\r']]);
  assert.match(r.out, /^got-\[\]$/m);
});

test('passive: the container has a console but nothing is relayed', () => {
  const r = onTerminal(['--console=passive', '-M', 't-nsc-pas', '/bin/sh', '-c', 'test -c /dev/console && echo visible-output; exit 3'], []);
  assert.equal(r.status, 3);
  assert.doesNotMatch(r.out, /visible-output/);
});
