#!/usr/bin/env bash
# What the flow monitor's browser test (tests/e2e/test_monitor.py) needs besides Python packages:
# Debian's chromium with its chromium-driver (one source package, so the two versions always
# match), and graphviz, whose `dot` the gateway draws machine diagrams with.
#
#   scripts/browser.sh           install whatever is missing (as root or through sudo), then
#                                print the versions
#   scripts/browser.sh check     only say what is missing; exit 1 if anything is
set -euo pipefail

PACKAGES=(chromium chromium-driver graphviz)
COMMANDS=(chromium chromedriver dot)

say() { printf 'browser: %s\n' "$*" >&2; }
die() { printf 'browser: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (or install ${PACKAGES[*]} yourself)"
  fi
}

missing() {
  local i
  for i in "${!COMMANDS[@]}"; do
    command -v "${COMMANDS[$i]}" >/dev/null || printf '%s\n' "${PACKAGES[$i]}"
  done
}

case "${1:-install}" in
  install)
    mapfile -t wanted < <(missing)
    if [ "${#wanted[@]}" -gt 0 ]; then
      command -v apt-get >/dev/null || die "no apt-get: install ${wanted[*]} yourself"
      say "installing ${wanted[*]} from Debian's packages"
      as_root apt-get update -qq >/dev/null
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${wanted[@]}" >/dev/null
      mapfile -t still < <(missing)
      [ "${#still[@]}" -eq 0 ] || die "still missing after the install: ${still[*]}"
    fi
    say "$(chromium --version 2>/dev/null | head -n1); $(chromedriver --version | cut -d' ' -f1-2); $(dot -V 2>&1)"
    ;;
  check)
    mapfile -t wanted < <(missing)
    [ "${#wanted[@]}" -eq 0 ] || die "missing: ${wanted[*]}; run: bash scripts/browser.sh"
    say "chromium, chromedriver and dot are installed"
    ;;
  *)
    die "usage: $0 [install|check]"
    ;;
esac
