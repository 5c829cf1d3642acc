#!/usr/bin/env bash
# The README's test command (`npm test`): typecheck, then the whole vitest suite, then the
# closing line `N passed, N failed` that CI reads (vitest does not print one).
set -uo pipefail
cd "$(dirname "$0")/.."

[ -d node_modules ] || npm ci --no-audit --no-fund

report=$(mktemp)
trap 'rm -f "$report"' EXIT

tc_failed=0
if ! npx --no-install tsc -p tsconfig.json --noEmit; then
  echo "typecheck failed"
  tc_failed=1
fi

npx --no-install vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"
status=$?

node -e '
  const fs = require("fs");
  let r = {};
  try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch {}
  const passed = (r.numPassedTests ?? 0) + 0;
  const failed = (r.numFailedTests ?? 0) + Number(process.argv[2]) + (r.numTotalTests === undefined ? 1 : 0);
  console.log(`${passed} passed, ${failed} failed`);
' "$report" "$tc_failed"

[ "$status" -eq 0 ] && [ "$tc_failed" -eq 0 ]
