// Public API of the import part: transfers between URLs/files and the image pool.
export { pull, type PullOptions, type TransferResult } from './pull.js';
export { importImage, importDirectory, exportImage, type ImportOptions, type ImportFsOptions, type ExportOptions } from './local.js';
export { cleanStaleTransfers } from './work-entry.js';
export { parseVerifyMode, VERIFY_MODES, type VerifyMode } from './verify.js';
export { parseFormat, COMPRESSIONS, type Compression } from './compression.js';
export { TransferCanceled } from './unpack.js';
export type { ImageKind } from './names.js';
export { openTransferRecord, listTransfers, cancelTransfer, type TransferInfo, type TransferRecord, type TransferType } from './transfers.js';
export { defaultNameFromUrl, defaultNameFromFile, defaultNameFromDirectory } from './names.js';
