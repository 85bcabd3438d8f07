// Object-path label escaping exactly as systemd's bus_label_escape()/bus_label_unescape():
// every byte outside [A-Za-z] (and a digit in first position) becomes _XX (lowercase hex);
// the empty string becomes "_".

function isAlpha(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

export function busLabelEscape(label: string): string {
  if (label.length === 0) return '_';
  const bytes = Buffer.from(label, 'utf8');
  let out = '';
  bytes.forEach((c, i) => {
    if (isAlpha(c) || (i > 0 && isDigit(c))) out += String.fromCharCode(c);
    else out += `_${c.toString(16).padStart(2, '0')}`;
  });
  return out;
}

export function busLabelUnescape(label: string): string {
  if (label === '_') return '';
  const bytes: number[] = [];
  for (let i = 0; i < label.length; i++) {
    const ch = label[i] as string;
    if (ch === '_' && i + 2 < label.length + 0 && /^[0-9a-fA-F]{2}$/.test(label.slice(i + 1, i + 3))) {
      bytes.push(parseInt(label.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(ch.charCodeAt(0));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/**
 * unit_name_escape(): "/" becomes "-", and every byte outside [A-Za-z0-9:_.] (or a leading
 * ".") becomes \xXX. Used for machine-NAME.scope.
 */
export function unitNameEscape(name: string): string {
  const bytes = Buffer.from(name, 'utf8');
  let out = '';
  bytes.forEach((c, i) => {
    const ch = String.fromCharCode(c);
    if (ch === '/') out += '-';
    else if ((ch === '.' && i === 0) || !/[A-Za-z0-9:_.]/.test(ch)) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  });
  return out;
}
