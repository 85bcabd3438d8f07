// Public API of the image part: the pool (store), image locks, and disk image attach/mount.
export * from './store.js';
export { ImageError, DiskImageError, type ImageErrorKind } from './errors.js';
export { readMetadata } from './metadata.js';
