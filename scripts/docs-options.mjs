#!/usr/bin/env node
// Regenerates docs/options.md from the option table in src/domain/spec.ts, from the compiled
// dist/ (`npm run docs:options` compiles first; tsc emits even when another file has type errors).
import { writeFileSync } from "node:fs";
import { renderOptionsDoc } from "../dist/src/domain/options-doc.js";

const target = new URL("../docs/options.md", import.meta.url);
writeFileSync(target, renderOptionsDoc());
console.log(`wrote ${target.pathname}`);
