/** The whole xenstore conformance suite, in the order it runs. */
import type { Case } from "./xenstore-harness.js";
import { nodeCases } from "./xenstore-cases-nodes.js";
import { watchCases } from "./xenstore-cases-watch.js";
import { domainCases, txCases } from "./xenstore-cases-tx.js";

export const xenstoreCases: readonly Case[] = [...nodeCases, ...watchCases, ...txCases, ...domainCases];
