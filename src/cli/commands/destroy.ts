/** `vmstack destroy D`: pull the plug (xl destroy): QEMU ends at once, the domain's records go. */
import { domainVerb } from "./domain-verb.js";

export const destroyCommand = domainVerb("destroy", "end a domain at once, without asking the guest");
