#!/usr/bin/env bash
# `sudo npm run demo`: everything from a fresh clone to a booted Debian container and back.
# Installs dependencies, builds, builds the default Debian image if it is not in the pool yet,
# boots it with mctl-nspawn, shows it running, and powers it off cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (sudo npm run demo)" >&2; exit 1; }
command -v debootstrap >/dev/null && command -v systemd-nspawn >/dev/null || {
  echo "demo: installing debootstrap and systemd-container"; apt-get update -qq; apt-get install -y -qq debootstrap systemd-container >/dev/null; }
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
npm run -s build

pool=${MCTL_POOL:-/var/lib/machines}
name=${MCTL_DEMO_MACHINE:-debian}
if [ ! -d "$pool/$name" ]; then
  echo "demo: building the Debian bookworm image (debootstrap, about a minute)…"
  tree=$(images/build.sh debian)
  mkdir -p "$pool"; chmod 0700 "$pool"
  cp -a --reflink=auto "$tree" "$pool/.#$name.tmp" && mv "$pool/.#$name.tmp" "$pool/$name"
fi

echo "demo: booting $pool/$name"
./bin/mctl-nspawn --quiet --boot --console=passive -D "$pool/$name" -M "$name" &
launcher=$!
trap 'kill -TERM $launcher 2>/dev/null || true; wait $launcher 2>/dev/null || true' EXIT
leader=""
for _ in $(seq 1 100); do
  leader=$(pgrep -P "$launcher" | head -n1 || true)
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { echo "demo: the container did not start" >&2; exit 1; }
# PID 1 creates its control socket a moment after it starts: ask until it answers
state=unknown
for _ in $(seq 1 300); do
  state=$(nsenter -t "$leader" -a -- systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded|maintenance|stopping) break ;; esac
  sleep 0.2
done
echo "demo: $name is $state (leader PID $leader)"
nsenter -t "$leader" -a -- sh -c '. /etc/os-release; echo "demo: inside: $PRETTY_NAME, hostname $(hostname), $(systemctl list-units --type=service --state=running --no-legend | wc -l) services running"'
echo "demo: powering off"
kill -TERM "$launcher"
wait "$launcher"; status=$?
trap - EXIT
echo "demo: launcher exited with $status"
