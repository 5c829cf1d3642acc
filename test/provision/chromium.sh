#!/usr/bin/env bash
# The browser the console tests and `npm run screenshots` drive through playwright-core:
# Debian's chromium (no download from a CDN at test time; HOSTKEEPER_CHROMIUM overrides the path).
command -v chromium >/dev/null 2>&1 || need_pkg chromium
