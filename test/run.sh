#!/usr/bin/env bash
# The README's test command (`npm test`): typecheck, then the whole vitest suite, then the
# closing line `N passed, N failed` that CI reads (vitest does not print one).
set -uo pipefail
cd "$(dirname "$0")/.."

[ -d node_modules ] || npm ci --no-audit --no-fund

# System packages the tests use, installed once when missing (idempotent; needs root and apt).
# libvirt-clients: the libvirt driver's read paths run against `virsh -c test:///...`.
# qemu-utils: qemu-img, whose version the agent reports as a host fact.
# ansible-core, openssh-server, sshpass: the test hosts (test/hosts/testhosts.ts) run a real
# sshd each, and the deployment tests reach them with ansible-playbook and passwords.
need=()
command -v virsh >/dev/null 2>&1 || need+=(libvirt-clients)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v ansible-playbook >/dev/null 2>&1 || need+=(ansible-core)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v sshpass >/dev/null 2>&1 || need+=(sshpass)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "provisioning: ${need[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >/tmp/hostkeeper-provision.log 2>&1 \
      || { echo "provisioning failed (see /tmp/hostkeeper-provision.log)"; tail -5 /tmp/hostkeeper-provision.log; }
  else
    echo "note: ${need[*]} missing and cannot be installed here; tests that need them will say so"
  fi
fi

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
