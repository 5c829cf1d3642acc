#!/usr/bin/env bash
# The KVM stack the real-host tests run (sourced by test/run.sh, which provides `need_pkg`
# and `after`): libvirtd + virtlogd, QEMU's x86 system emulator and qemu-img, virsh.
# --no-install-recommends (run.sh's install) keeps out dnsmasq, iptables and the like: the
# test guests have no NIC, and the bundled playbook installs the same minimal set.
#
# Bare test hosts (test/hosts/testhosts.ts `bare: true`) prove the playbook's install path:
# in the host's private overlay the packages are removed again, and the playbook installs
# them from HK_KVM_DEB_CACHE (test hosts have no network). So before the machine gets the
# packages, their .debs (the whole closure this machine lacks) are downloaded there once,
# and the names installed are recorded in packages.txt. A custom directory: Docker's
# apt.conf.d/docker-clean empties /var/cache/apt/archives after every install.
HK_KVM_DEB_CACHE=/var/cache/hostkeeper-kvm-debs
HK_KVM_PACKAGES=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils)

hk_kvm_missing=()
for p in "${HK_KVM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || hk_kvm_missing+=("$p")
done
if [ ! -s "$HK_KVM_DEB_CACHE/packages.txt" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  mkdir -p "$HK_KVM_DEB_CACHE/partial"
  # The packages apt would install here (what a bare host lacks), then their .debs.
  {
    apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends --download-only \
      -o Dir::Cache::archives="$HK_KVM_DEB_CACHE" "${HK_KVM_PACKAGES[@]}" &&
    # New installs only ("Inst name (version ..."): an upgrade ("Inst name [old] (new ...")
    # is already on the machine and on a bare host; removing it there (libsystemd0, when the
    # image lags the archive) left the host's sshd unable to start.
    apt-get install -s --no-install-recommends "${HK_KVM_PACKAGES[@]}" | sed -n 's/^Inst \([^ ]*\) (.*/\1/p' >"$HK_KVM_DEB_CACHE/packages.new" &&
    # Already installed (someone got there first): fetch the top-level ones at least.
    if [ ! -s "$HK_KVM_DEB_CACHE/packages.new" ]; then
      (cd "$HK_KVM_DEB_CACHE" && apt-get download "${HK_KVM_PACKAGES[@]}") && printf '%s\n' "${HK_KVM_PACKAGES[@]}" >"$HK_KVM_DEB_CACHE/packages.new"
    fi &&
    mv -f "$HK_KVM_DEB_CACHE/packages.new" "$HK_KVM_DEB_CACHE/packages.txt"
  } >>/tmp/hostkeeper-provision.log 2>&1 || echo "provisioning: could not fill $HK_KVM_DEB_CACHE (see /tmp/hostkeeper-provision.log); bare-host tests will say so"
fi
[ ${#hk_kvm_missing[@]} -eq 0 ] || need_pkg "${hk_kvm_missing[@]}"
# Nothing to start: each test host runs its own libvirtd and virtlogd (the playbook starts them).
