#!/usr/bin/env bash
# The README's test command (`npm test`): typecheck, then the whole vitest suite, then the
# closing line `N passed, N failed` that CI reads (vitest does not print one).
set -uo pipefail
# Dates are written in UTC unless TZ says otherwise (contract); the tests expect UTC.
export TZ=UTC
cd "$(dirname "$0")/.."

[ -d node_modules ] || npm ci --no-audit --no-fund

# System packages and services the tests use, provisioned when missing (idempotent; needs root
# and apt). Each test/provision/*.sh says what it needs with `need_pkg NAME` (installed in one
# apt run below) and may queue steps to run after the install with `after+=(FUNCTION)`
# (starting a service, say).
need=()
need_pkg() { need+=("$@"); }
after=()
for f in test/provision/*.sh; do
  # shellcheck source=/dev/null
  . "$f"
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "provisioning: ${need[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >/tmp/hostkeeper-provision.log 2>&1 \
      || { echo "provisioning failed (see /tmp/hostkeeper-provision.log)"; tail -5 /tmp/hostkeeper-provision.log; }
  else
    echo "note: ${need[*]} missing and cannot be installed here; tests that need them will say so"
  fi
fi
# Steps a provision file queued with `after+=(function_name)`: start services and the like.
for step in "${after[@]}"; do "$step"; done

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
