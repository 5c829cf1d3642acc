#!/usr/bin/env node
/**
 * `npx hostkeeper <Action> key=value ...`: runs controller/cli/main.ts in this process
 * through tsx's loader. `tsx/esm/api` resolves from this file's own package (bin/ ->
 * ../node_modules), and the tsconfig is pinned to the package's, so it works from any cwd.
 * In-process (not a child node): argv, stdio, signals and the exit code pass through as is.
 */
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';

register({ tsconfig: fileURLToPath(new URL('../tsconfig.json', import.meta.url)) });
await import(new URL('../controller/cli/main.ts', import.meta.url).href);
