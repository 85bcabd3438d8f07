// Public surface of the networking part (other parts import only this file).
export { siphash24, hexKey } from './siphash.js';
export { shortenIfname, hostVethName, zoneBridgeName, generateMac, MAC_KEYS, isValidZoneName, readHostMachineId } from './names.js';
export { listLinks, getLink, listAddrs, listRoutes, ipBatch, ipJson, deleteLinkIfExists, isValidIfname, type Link, type NetnsTarget } from './ip.js';
export { LockFile, isLockFree } from './lockfile.js';
export { netConfig, type NetConfig } from './config.js';
export { parsePortForward, assertNoDuplicatePorts, type PortForward } from './ports.js';
export { setupMachineNetwork, collect, machineLockPath, readMachineNetState, machineAddresses, type MachineNetworkRequest, type MachineNetwork, type MachineNetState, type VethExtra, type CollectResult } from './machine.js';
export { containerResolvConf } from './resolv.js';
