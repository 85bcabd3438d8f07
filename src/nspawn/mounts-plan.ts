// From --directory/--template/--ephemeral/--read-only/--volatile and the custom mounts
// (--bind, --tmpfs, --overlay, --inaccessible, .nspawn [Files]) to the root and mount
// operations of a ContainerSpec.
//
// Throw-away layers (-x, --volatile, --overlay with an empty upper) are not made on the host:
// the spec asks the runtime to build them on a tmpfs inside the container's own mount
// namespace, so they vanish with it even when the launcher is SIGKILLed. That is where we
// differ from systemd-nspawn, whose -x copy in /.#machine.* survives a killed launcher.
import { existsSync, mkdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { UserError } from '../common/errors.js';
import type { ContainerOptions, CustomMount, SourcePath } from './options.js';
import type { MountOp } from './spec.js';
import { INIT_CANDIDATES } from './spec.js';

export interface RootPlan {
  /** Host path of the tree (realpath). */
  root: string;
  readOnlyRoot: boolean;
  rootLayer: 'plain' | 'overlay' | 'volatile';
  mounts: MountOp[];
  /** Undo steps for host-side things the plan made (overlay work dirs), run at exit in reverse. */
  cleanup: Array<() => void>;
  /** True when the tree itself may be modified from the host (resolv.conf, localtime, machine-id). */
  treeWritable: boolean;
}

/** The tree exists (or is made from --template) and looks like an OS tree: nspawn's checks. */
export async function prepareDirectory(o: ContainerOptions): Promise<{ root: string; createdFromTemplate: boolean }> {
  const dir = o.directory;
  if (dir === undefined) throw new UserError('no root directory given (use -D PATH)');
  let createdFromTemplate = false;
  if (o.template !== undefined && !existsSync(dir)) {
    await copyTemplate(o.template, dir);
    createdFromTemplate = true;
  }
  let root: string;
  try {
    root = realpathSync(dir);
  } catch (err) {
    throw new UserError(`directory ${dir} does not exist`, { hint: (err as NodeJS.ErrnoException).code });
  }
  if (!statSync(root).isDirectory()) throw new UserError(`${dir} is not a directory`);
  if (o.startMode === 'boot') {
    if (!existsSync(join(root, 'etc/os-release')) && !existsSync(join(root, 'usr/lib/os-release'))) {
      throw new UserError(`directory ${dir} does not look like an OS root directory (os-release file is missing)`);
    }
    if (!INIT_CANDIDATES.some((p) => existsSync(join(root, p)))) {
      throw new UserError(`directory ${dir} has no init (looked for ${INIT_CANDIDATES.join(', ')})`);
    }
  } else if (root !== '/' && !existsSync(join(root, 'usr'))) {
    throw new UserError(`directory ${dir} does not look like it has an OS tree (/usr is missing)`);
  }
  return { root, createdFromTemplate };
}

/** --template: copy the template tree to DIR (reflinks where the file system has them). */
async function copyTemplate(template: string, dir: string): Promise<void> {
  // Loaded here: child_process is not needed on the common path.
  const { execFileSync } = await import('node:child_process');
  let src: string;
  try {
    src = realpathSync(template);
  } catch {
    throw new UserError(`template ${template} does not exist`);
  }
  if (!statSync(src).isDirectory()) throw new UserError(`template ${template} is not a directory`);
  if (!existsSync(dirname(dir))) throw new UserError(`cannot create ${dir}: ${dirname(dir)} does not exist`);
  // Copy into a hidden sibling and rename, so a failed or interrupted copy never looks like a root.
  const tmp = join(dirname(dir), `.#${basename(dir)}.template-${process.pid}`);
  try {
    execFileSync('cp', ['-a', '--reflink=auto', '--no-target-directory', src, tmp], { stdio: ['ignore', 'ignore', 'pipe'] });
    execFileSync('mv', ['--no-target-directory', tmp, dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim().split('\n')[0];
    throw new UserError(`cannot populate ${dir} from template ${template}: ${stderr || String(err)}`);
  }
}

function hostPath(src: SourcePath, root: string, what: string): string {
  const path = src.inContainer ? join(root, src.path) : src.path;
  if (!existsSync(path)) throw new UserError(`${what}: ${path} does not exist`);
  return path;
}

/** The runtime's mount operations for the custom mounts, in the order given. */
export function planCustomMounts(mounts: readonly CustomMount[], root: string, cleanup: Array<() => void>): MountOp[] {
  const ops: MountOp[] = [];
  for (const m of mounts) {
    switch (m.kind) {
      case 'bind':
        if (m.source === null) {
          // nspawn makes a temporary host directory; an in-namespace tmpfs is the same to the
          // payload and cannot be left behind. (Read-only makes no sense for an empty dir.)
          ops.push({ kind: 'tmpfs', destination: m.destination, options: 'mode=0755' });
        } else {
          if (m.idmap !== 'no') throw new UserError(`--bind: the '${m.idmap}' option needs a user namespace, which mctl-nspawn does not offer for binds yet`);
          ops.push({ kind: 'bind', source: hostPath(m.source, root, '--bind'), destination: m.destination, readOnly: m.readOnly, recursive: m.recursive });
        }
        break;
      case 'tmpfs':
        ops.push({ kind: 'tmpfs', destination: m.destination, options: m.options });
        break;
      case 'inaccessible':
        ops.push({ kind: 'inaccessible', destination: m.destination });
        break;
      case 'overlay': {
        // Given bottom-most first; overlayfs wants the top-most first.
        const lowerDirs = m.lower.map((l) => hostPath(l, root, '--overlay')).reverse();
        if (m.readOnly && lowerDirs.length === 1) {
          // overlayfs refuses a single lower layer without an upper; that is a read-only bind.
          ops.push({ kind: 'bind', source: lowerDirs[0]!, destination: m.destination, readOnly: true, recursive: false });
        } else if (m.readOnly) {
          ops.push({ kind: 'overlay', destination: m.destination, lowerDirs, upperDir: null, workDir: null });
        } else if (m.upper === null) {
          ops.push({ kind: 'overlay', destination: m.destination, lowerDirs, upperDir: null, workDir: null, temporaryUpper: true });
        } else {
          const upperDir = hostPath(m.upper, root, '--overlay');
          // overlayfs needs an empty work dir on the upper's file system. A fixed name next to
          // the upper is reused after a crash instead of piling up.
          const workDir = join(dirname(upperDir), `.#${basename(upperDir)}.mctl-overlay-work`);
          const existed = existsSync(workDir);
          if (existed) rmSync(workDir, { recursive: true, force: true });
          mkdirSync(workDir, { mode: 0o700 });
          cleanup.push(() => rmSync(workDir, { recursive: true, force: true }));
          ops.push({ kind: 'overlay', destination: m.destination, lowerDirs, upperDir, workDir });
        }
        break;
      }
    }
  }
  return ops;
}

/** Root handling and mount operations for the merged options. */
export function planRoot(o: ContainerOptions, root: string): RootPlan {
  const cleanup: Array<() => void> = [];
  let rootLayer: RootPlan['rootLayer'] = 'plain';
  let readOnlyRoot = o.readOnly === true;
  const mounts: MountOp[] = [];
  const volatile = o.volatile ?? 'no';
  if (o.ephemeral || volatile === 'overlay') rootLayer = 'overlay';
  else if (volatile === 'yes') rootLayer = 'volatile';
  else if (volatile === 'state') {
    // The OS is read-only, its state (/var) starts empty on every boot.
    readOnlyRoot = true;
    mounts.push({ kind: 'tmpfs', destination: '/var', options: 'mode=0755' });
  }
  try {
    mounts.push(...planCustomMounts(o.mounts ?? [], root, cleanup));
  } catch (err) {
    for (const undo of cleanup.reverse()) undo();
    throw err;
  }
  return { root, readOnlyRoot, rootLayer, mounts, cleanup, treeWritable: rootLayer === 'plain' && !readOnlyRoot };
}
