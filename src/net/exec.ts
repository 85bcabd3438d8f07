// Running the host programs this part wraps (iproute2 `ip`, `nft`, `nsenter`): one place that
// turns their failures into one-line errors carrying the program's own first stderr line.
import { spawn } from 'node:child_process';

export class ToolError extends Error {
  readonly tool: string;
  readonly stderr: string;
  readonly status: number | null;
  constructor(tool: string, stderr: string, status: number | null) {
    const first = stderr.split('\n').find((l) => l.trim() !== '') ?? `exit status ${status}`;
    super(`${tool}: ${first.trim()}`);
    this.name = 'ToolError';
    this.tool = tool;
    this.stderr = stderr;
    this.status = status;
  }
}

/** Run a program, feeding `input` on stdin; resolves with stdout, rejects with ToolError. */
export function runTool(argv: readonly string[], input?: string, env?: NodeJS.ProcessEnv): Promise<string> {
  const [file, ...args] = argv;
  if (!file) throw new Error('runTool: empty argv');
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], ...(env ? { env } : {}) });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new ToolError(file, e.message, null)));
    child.on('close', (status) => {
      if (status === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new ToolError(file === 'nsenter' ? (args.find((a) => !a.startsWith('-')) ?? file) : file, Buffer.concat(err).toString('utf8'), status));
    });
    child.stdin.on('error', () => undefined); // the tool may exit before reading everything
    child.stdin.end(input ?? '');
  });
}
