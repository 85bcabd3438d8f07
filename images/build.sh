#!/usr/bin/env bash
# Build (or reuse) an image from images/NAME.recipe and print the path of the finished tree.
# Trees are cached outside the repo under $MCTL_IMAGE_CACHE (default /var/cache/mctl-test),
# keyed by a hash of the recipe and of this script, so editing either rebuilds. A flock makes
# concurrent runs wait for one build instead of racing; a build lands by rename, so a killed
# build never leaves a tree that looks finished.
set -euo pipefail
name=${1:?usage: images/build.sh NAME   (NAME.recipe in images/)}
here=$(cd "$(dirname "$0")" && pwd)
recipe=$here/$name.recipe
[ -f "$recipe" ] || { echo "build.sh: no recipe $recipe" >&2; exit 2; }
cache=${MCTL_IMAGE_CACHE:-/var/cache/mctl-test}
mirror=${MCTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
hash=$(cat "$recipe" "$0" | sha256sum | cut -c1-16)
out=$cache/$name-$hash
mkdir -p "$cache"
exec 9>"$cache/.$name.lock"
flock 9
if [ -f "$out/.mctl-image-complete" ]; then echo "$out"; exit 0; fi

# shellcheck disable=SC1090
. "$recipe"
command -v debootstrap >/dev/null || { echo "build.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
tmp=$cache/.build-$name-$hash.$$
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "build.sh: building $name ($SUITE, $INCLUDE) into $out" >&2
debootstrap --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$tmp" "$mirror" >"$cache/$name-$hash.log" 2>&1 \
  || { echo "build.sh: debootstrap failed, see $cache/$name-$hash.log" >&2; exit 1; }

# Known root password for login tests; hostname; an empty machine-id so every boot gets its own.
hashpw=$(openssl passwd -6 "$ROOT_PASSWORD" 2>/dev/null || python3 -c "import crypt,sys;print(crypt.crypt(sys.argv[1],crypt.mksalt(crypt.METHOD_SHA512)))" "$ROOT_PASSWORD")
sed -i "s|^root:[^:]*:|root:$hashpw:|" "$tmp/etc/shadow"
echo "$HOSTNAME" >"$tmp/etc/hostname"
: >"$tmp/etc/machine-id"
rm -f "$tmp/var/lib/dbus/machine-id"
# pam_securetty refuses root on pts/N consoles; containers log in over ptys.
rm -f "$tmp/etc/securetty"
rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"* 
touch "$tmp/.mctl-image-complete"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
# Drop stale builds of the same image (older recipe hashes).
for old in "$cache/$name"-*; do
  [ "$old" = "$out" ] || [ "$old" = "$out.log" ] || [ ! -d "$old" ] || rm -rf "$old"
done
echo "$out"
