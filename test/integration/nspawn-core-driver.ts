// Test driver for the runtime alone (no option parsing): reads a ContainerSpec as JSON from
// argv[2] and launches it. With MCTL_TEST_HOOK_FILE set, an afterNamespaces hook writes the
// leader PID there (and fails when MCTL_TEST_HOOK_FAIL=1), to exercise the hook path.
import { writeFileSync } from 'node:fs';
import { runMain } from '../../src/common/errors.js';
import { launch, type LaunchHooks } from '../../src/nspawn/launch.js';
import type { ContainerSpec } from '../../src/nspawn/spec.js';

runMain('mctl-nspawn', async () => {
  const spec = JSON.parse(process.argv[2] ?? '{}') as ContainerSpec;
  const hookFile = process.env['MCTL_TEST_HOOK_FILE'];
  const hooks: LaunchHooks = {};
  if (hookFile) {
    hooks.afterNamespaces = [
      async (pid) => {
        writeFileSync(hookFile, String(pid));
        if (process.env['MCTL_TEST_HOOK_FAIL'] === '1') throw new Error('hook failed on purpose');
      },
    ];
  }
  await launch(spec, hooks);
});
