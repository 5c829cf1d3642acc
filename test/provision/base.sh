#!/usr/bin/env bash
# Packages every test run needs (sourced by test/run.sh, which provides `need_pkg`).
# libvirt-clients: the libvirt driver's read paths run against `virsh -c test:///...`.
# qemu-utils: qemu-img, whose version the agent reports as a host fact.
# ansible-core, openssh-server, sshpass: the test hosts (test/hosts/testhosts.ts) run a real
# sshd each, and the deployment tests reach them with ansible-playbook and passwords.
command -v virsh >/dev/null 2>&1 || need_pkg libvirt-clients
command -v qemu-img >/dev/null 2>&1 || need_pkg qemu-utils
command -v ansible-playbook >/dev/null 2>&1 || need_pkg ansible-core
[ -x /usr/sbin/sshd ] || need_pkg openssh-server
command -v sshpass >/dev/null 2>&1 || need_pkg sshpass
