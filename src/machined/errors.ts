// D-Bus errors the service replies with: systemd's error names, so clients that match on them
// (machinectl, sd-bus users) behave as they do against systemd-machined.

export const ERR = {
  NoSuchMachine: 'org.freedesktop.machine1.NoSuchMachine',
  NoSuchImage: 'org.freedesktop.machine1.NoSuchImage',
  NoMachineForPID: 'org.freedesktop.machine1.NoMachineForPID',
  MachineExists: 'org.freedesktop.machine1.MachineExists',
  NoPrivateNetworking: 'org.freedesktop.machine1.NoPrivateNetworking',
  NoSuchUserMapping: 'org.freedesktop.machine1.NoSuchUserMapping',
  NoSuchGroupMapping: 'org.freedesktop.machine1.NoSuchGroupMapping',
  InvalidArgs: 'org.freedesktop.DBus.Error.InvalidArgs',
  AccessDenied: 'org.freedesktop.DBus.Error.AccessDenied',
  NotSupported: 'org.freedesktop.DBus.Error.NotSupported',
  Failed: 'org.freedesktop.DBus.Error.Failed',
  UnknownObject: 'org.freedesktop.DBus.Error.UnknownObject',
  UnknownMethod: 'org.freedesktop.DBus.Error.UnknownMethod',
  UnknownInterface: 'org.freedesktop.DBus.Error.UnknownInterface',
  UnknownProperty: 'org.freedesktop.DBus.Error.UnknownProperty',
  PropertyReadOnly: 'org.freedesktop.DBus.Error.PropertyReadOnly',
  JobFailed: 'org.freedesktop.systemd1.JobFailed',
} as const;

/** An error that goes back to the caller as a D-Bus error reply with this name and message. */
export class BusError extends Error {
  readonly errorName: string;
  constructor(errorName: string, message: string) {
    super(message);
    this.name = 'BusError';
    this.errorName = errorName;
  }
}

const ERRNO_ERRORS: Record<string, string> = {
  EPERM: ERR.AccessDenied,
  EACCES: ERR.AccessDenied,
  EINVAL: ERR.InvalidArgs,
  ENOENT: 'org.freedesktop.DBus.Error.FileNotFound',
  EEXIST: 'org.freedesktop.DBus.Error.FileExists',
  ENOMEM: 'org.freedesktop.DBus.Error.NoMemory',
  EOPNOTSUPP: ERR.NotSupported,
  ENOSYS: ERR.NotSupported,
  ETIMEDOUT: 'org.freedesktop.DBus.Error.Timeout',
  EIO: 'org.freedesktop.DBus.Error.IOError',
  ENXIO: 'System.Error.ENXIO',
  EBUSY: 'System.Error.EBUSY',
  ESRCH: 'System.Error.ESRCH',
};

/** sd-bus maps errno values to D-Bus error names this way (bus_error_set_errnof). */
export function errnoError(code: string, message: string): BusError {
  return new BusError(ERRNO_ERRORS[code] ?? `System.Error.${code}`, message);
}

/** Turn anything thrown by a handler into the BusError the caller receives. */
export function toBusError(err: unknown): BusError {
  if (err instanceof BusError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message.split('\n')[0] ?? err.message : String(err);
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return errnoError(code, message);
  return new BusError(ERR.Failed, message);
}
