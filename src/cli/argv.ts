// Command-line preprocessing that yargs cannot express: machinectl's default verb (`list`) and
// `shell NAME CMD ARGS…`, where everything from CMD on belongs to the command (so
// `mctl shell box /bin/sh -c 'exit 7'` works without a `--`).

/** Options that take a separate value (`-o json`), so the value is not mistaken for the verb. */
const VALUE_OPTIONS = new Set([
  '-o', '--output', '-M', '--machine', '-p', '--property', '-s', '--signal', '--kill-whom', '--max-addresses',
  '-E', '--setenv', '--uid', '--verify', '--format', '-n', '--lines',
]);

function isOption(token: string): boolean {
  return token.startsWith('-') && token !== '-';
}

/** The verb of a command line: its first positional token, if any. */
export function verbOf(tokens: string[]): string | undefined {
  const i = positionals(tokens)[0];
  return i === undefined ? undefined : tokens[i];
}

/** Indexes of the positional (non-option) tokens before any `--`. */
function positionals(tokens: string[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as string;
    if (t === '--') break;
    if (isOption(t)) {
      if (VALUE_OPTIONS.has(t)) i++;
      continue;
    }
    out.push(i);
  }
  return out;
}

export function preprocessArgv(tokens: string[]): string[] {
  const pos = positionals(tokens);
  const wantsHelpOrVersion = tokens.some((t) => ['--help', '-h', '--version', '--get-yargs-completions'].includes(t));
  if (pos.length === 0) return wantsHelpOrVersion ? tokens : [...tokens, 'list'];
  const verbAt = pos[0] as number;
  if (tokens[verbAt] !== 'shell') return tokens;
  // shell [TARGET] [CMD...]: the second positional after the verb starts the command.
  const cmdAt = pos[2];
  if (cmdAt === undefined) return tokens;
  return [...tokens.slice(0, cmdAt), '--', ...tokens.slice(cmdAt)];
}
