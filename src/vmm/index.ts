/** The vmm layer's public surface. */
export { buildQemuArgs, virtioDevice } from "./qemu-args.js";
export type { Accel, ChannelConfig, MachineConfig, MachineType, SerialTarget } from "./qemu-args.js";
export { chooseAccel, DEFAULT_PROBE_DEADLINE_MS } from "./accel.js";
export type { AccelChoice, AccelDecision } from "./accel.js";
export { qemuBinary, qemuVersion, kvmDeviceUsable, tscKhz } from "./host.js";
export { GuestVm, kernelCommandLine } from "./guest-vm.js";
export type { GuestVmOptions } from "./guest-vm.js";
export { prepareGuestImage, guestModules } from "./guest-image.js";
export type { GuestFeature } from "./guest-image.js";
export { accelForGuest, decideAccel } from "./guest-accel.js";
export type { GuestImage } from "./guest-image.js";
export { runThrowaway, bootTimeoutMs } from "./throwaway.js";
export type { ThrowawayOptions, ThrowawayResult } from "./throwaway.js";
