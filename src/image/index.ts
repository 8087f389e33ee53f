/**
 * The image layer's public surface: guest kernel (find, provision), kernel modules, the cpio
 * writer, initrd builder and vmstack's cache. The rest of vmstack imports only this file.
 */
export { cacheRoot, ContentStore, openCache, recipeKey, sha256, sha256File, sweepStaleTemps, tempPathFor, touch, writeFileAtomic } from "./cache.js";
export type { BuildResult, Env } from "./cache.js";
export { writeCpio, normalizeArchivePath } from "./cpio.js";
export type { CpioEntry } from "./cpio.js";
export { readCpio } from "./cpio-reader.js";
export type { CpioRecord } from "./cpio-reader.js";
export { DEFAULT_GUEST_MODULES, guestModulesFor, moduleName, parseModulesBuiltin, parseModulesDep, resolveModules } from "./modules.js";
export type { GuestDevices, ModuleIndex, ModuleInfo, VirtioTransport } from "./modules.js";
export { KERNEL_ENV, inspectKernelFile, kernelsDir, provisionedKernel, resolveKernel } from "./kernel.js";
export type { KernelSource, ResolvedKernel, ResolveKernelOptions } from "./kernel.js";
export { CLOUD_KERNEL_META_PACKAGE, fetchKernel } from "./kernel-fetch.js";
export type { FetchKernelOptions, FetchKernelResult } from "./kernel-fetch.js";
export { extractVmlinux, kernelFileKind, parseBzImage } from "./vmlinux.js";
export type { BzImageInfo, KernelFileKind, PayloadFormat } from "./vmlinux.js";
export { DEFAULT_INITRD_COMPRESSION, INITRD_COMPRESSIONS, INITRD_SKELETON, LOAD_ORDER_PATH, buildInitrd } from "./initrd.js";
export type { BuildInitrdOptions, InitrdCompression, InitrdFile, InitrdResult } from "./initrd.js";
export { hasPvhNote, withPvhVmlinux } from "./pvh.js";
export type { WithPvhOptions } from "./pvh.js";
export { chooseGrubEntry, grubWords, parseGrubCfg, parseMenuLst } from "./grub-menu.js";
export type { GrubEntry, GrubMenu } from "./grub-menu.js";
export { hasExtSuperblock, readPartitionTable } from "./partition-table.js";
export type { Partition } from "./partition-table.js";
export { MENU_CANDIDATES, resolveGuestGrub } from "./guest-grub.js";
export type { GuestGrubBoot, GuestGrubOptions } from "./guest-grub.js";
