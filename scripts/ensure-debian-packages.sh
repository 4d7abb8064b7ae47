#!/usr/bin/env bash
# Installs the Debian packages given as arguments when they are missing (apt-get, with sudo unless root).
# `make install` asks for WeasyPrint's libraries (Pango; HarfBuzz's subsetter, which embeds only the
# glyphs an invoice uses, about three times faster than WeasyPrint's pure-Python fallback; the
# DejaVu fonts the invoice CSS names); `make test` also asks for the browser test's headless Chromium.
# On a machine without dpkg it says what to install and carries on.
set -euo pipefail
missing=()
if ! command -v dpkg-query >/dev/null; then
  echo "not a Debian-like system: make sure these (or your system's equivalents) are installed: $*" >&2
  exit 0
fi
for package in "$@"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing the Debian packages ${missing[*]}"
  sudo=${SUDO:-$( [ "$(id -u)" = 0 ] || echo sudo )}
  # wait for another apt-get (a second checkout installing at the same time) instead of failing
  wait=(-o DPkg::Lock::Timeout=600)
  $sudo apt-get "${wait[@]}" update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -qq "${missing[@]}" >/dev/null
fi
