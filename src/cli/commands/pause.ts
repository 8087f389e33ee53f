/** `vmstack pause D`: stop the domain's vCPUs (xl pause; QMP stop). */
import { domainVerb } from "./domain-verb.js";

export const pauseCommand = domainVerb("pause", "pause a domain (its vCPUs stop; memory stays)");
