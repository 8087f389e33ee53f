/** Public surface of the domain layer: specs, validation, xl.cfg/xm configs, compilation to QEMU. */
export { domainSchema, ACTIONS, CRASH_ACTIONS, DISK_FORMATS, DISK_INTERFACES, NIC_MODELS } from "./spec.js";
export type { DomainSpec, DomainConfig, DiskConfig, NicConfig, ForwardConfig, ShareConfig, BootConfig, Action, CrashAction, DiskFormat, DiskInterface, NicModel } from "./spec.js";
export { parseDomainSpec, checkDomainSpec, stableMac } from "./parse-spec.js";
export type { ParseOptions, ParsedDomain } from "./parse-spec.js";
export { validateDomain } from "./validate.js";
export { DomainConfigError, OriginMap, formatProblem, formatOrigin, errorsOf, warningsOf } from "./diagnostics.js";
export type { Problem, Origin, Position, Severity } from "./diagnostics.js";
export { parseXlConfig, formatXlValue, XEN_PATH_CONSTANTS } from "./xl-config.js";
export type { XlConfig, XlSetting, XlValue } from "./xl-config.js";
export { importXlConfig } from "./xl-import.js";
export { parseDiskSpec } from "./disk-spec.js";
export { parseVifSpec } from "./vif-spec.js";
export { compileDomain, privateNetworkAddress } from "./compile.js";
export type { CompileContext, DomainPlan, PrepareStep, Helper } from "./compile.js";
export { loadDomainFile, loadDomainText, applyOverrides } from "./load.js";
export type { LoadedDomain, ConfigFormat } from "./load.js";
export { exportXlConfig } from "./xl-export.js";
export { renderOptionsDoc } from "./options-doc.js";
