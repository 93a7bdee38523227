#!/usr/bin/env bash
# Installs the Debian packages Parley's run or test command needs and the machine lacks.
# Usage: scripts/system-deps.sh run|test
#   run:  a Postgres and a Redis server binary (used only when none answers on its port)
#   test: the same, plus redis-cli (it builds the tests' Redis Cluster), haproxy (the compose
#         edge, run for real), chromium (browser tests),
#         coturn (a real TURN server that checks the gateways' credentials, issue 17) and a
#         colour-emoji font (emoji-picker-element hides the emoji a browser cannot draw)
set -euo pipefail

want=(redis-server:redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || want+=(postgresql:postgresql)
if [ "${1:-run}" = "test" ]; then
  want+=(redis-cli:redis-tools haproxy:haproxy chromium:chromium turnserver:coturn)
fi

missing=()
for entry in "${want[@]}"; do
  binary=${entry%%:*} package=${entry##*:}
  if [ "$binary" = postgresql ] || ! command -v "$binary" >/dev/null 2>&1; then
    missing+=("$package")
  fi
done
# Fonts have no binary to look for: their file is the sign they are installed.
EMOJI_FONT=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
if [ "${1:-run}" = "test" ] && [ ! -e "$EMOJI_FONT" ]; then
  missing+=(fonts-noto-color-emoji)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "Missing system packages: ${missing[*]}. Install them (e.g. sudo apt-get install ${missing[*]})." >&2
  exit 1
fi
echo "Installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d 101: install the binaries without starting system services; Parley starts
# private servers of its own when none answers.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ $created_policy -eq 1 ] && rm -f "$policy"
exit 0
