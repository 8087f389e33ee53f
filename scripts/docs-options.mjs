#!/usr/bin/env node
// Regenerates docs/options.md from the option table in src/domain/spec.ts (run after `npm run build`).
import { writeFileSync } from "node:fs";
import { renderOptionsDoc } from "../dist/src/domain/options-doc.js";

const target = new URL("../docs/options.md", import.meta.url);
writeFileSync(target, renderOptionsDoc());
console.log(`wrote ${target.pathname}`);
