/** `vmstack unpause D`: resume a paused domain (xl unpause; QMP cont). */
import { domainVerb } from "./domain-verb.js";

export const unpauseCommand = domainVerb("unpause", "unpause a paused domain");
