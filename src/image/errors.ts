// Typed image errors: one line for users, a `kind` for machined to map onto D-Bus errors
// (no-such-image → org.freedesktop.machine1.NoSuchImage, busy → EBUSY, read-only → EROFS…).
import { UserError } from '../common/errors.js';

export type ImageErrorKind = 'no-such-image' | 'exists' | 'busy' | 'read-only' | 'not-supported' | 'invalid';

export class ImageError extends UserError {
  readonly kind: ImageErrorKind;
  constructor(kind: ImageErrorKind, message: string, options: { hint?: string } = {}) {
    super(message, options);
    this.name = 'ImageError';
    this.kind = kind;
  }
}

/** A disk image that cannot be used: bad partition table, no root file system, truncated file. */
export class DiskImageError extends UserError {
  constructor(message: string) {
    super(message);
    this.name = 'DiskImageError';
  }
}
