// Public API of the image part: the pool (store), image locks, and disk images (dissect, mount).
export * from './store.js';
export { ImageError, DiskImageError, type ImageErrorKind } from './errors.js';
export { readMetadata } from './metadata.js';
export { mountImage, withMountedImage, imageWritable, STAGING_DIR, type MountedImage, type MountedPartition, type MountOptions } from './mount.js';
export { dissectImage, type DissectedImage, type ImagePartition, type FsType } from './dissect.js';
export { parseImagePolicy, applyImagePolicy, type ImagePolicy } from './policy.js';
