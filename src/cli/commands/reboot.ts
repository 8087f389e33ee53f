/** `vmstack reboot D`: ask the guest to reboot (xl reboot). */
import { domainVerb } from "./domain-verb.js";

export const rebootCommand = domainVerb(
  "reboot",
  "ask a domain's guest to reboot",
  "Writes control/shutdown=reboot in xenstore and asks vmstack's guest agent to reboot; a domain without\nthe agent is reset instead. on_reboot decides what follows.",
);
