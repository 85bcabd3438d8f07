#!/usr/bin/env bash
# Build (or reuse) a disk image of a tree and print its path. Used by the image tests and
# bench/image-boot.mjs; the tree comes from images/build.sh (the Debian recipe).
#
#   raw-images.sh KIND TREE      KIND: ext4 | gpt | mbr | squashfs | usr
#
#   ext4      bare ext4 file system (mkfs.ext4 -d TREE)
#   gpt       GPT disk (sfdisk) with one root partition of the Discoverable Partitions root type
#             for this architecture, holding that ext4 file system at 1 MiB
#   mbr       MBR disk with one Linux (0x83) partition holding it
#   squashfs  bare squashfs (zstd) of the tree
#   usr       GPT disk with only a usr partition (DPS usr type) holding an ext4 of TREE/usr:
#             a /usr-only image
#
# Images are cached under $MCTL_IMAGE_CACHE (default /var/cache/mctl-test) keyed by the tree's
# path (which carries its recipe hash) and this script's hash; a flock serialises concurrent
# builds, and an image lands by rename, so a killed build never looks finished. Never modify a
# cached image: copy it (cp --reflink=auto --sparse=always) or use it read-only.
set -euo pipefail
kind=${1:?usage: raw-images.sh ext4|gpt|mbr|squashfs|usr TREE}
tree=${2:?usage: raw-images.sh KIND TREE}
[ -d "$tree" ] || { echo "raw-images.sh: no tree $tree" >&2; exit 2; }
case $kind in ext4|gpt|mbr|squashfs|usr) ;; *) echo "raw-images.sh: unknown kind $kind" >&2; exit 2 ;; esac
case $(uname -m) in
  x86_64) root_type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709 usr_type=8484680c-9521-48c6-9c11-b0720656f69e ;;
  aarch64) root_type=b921b045-1df0-41c3-af44-4c6f280d3fae usr_type=b0e01050-ee5f-4390-949a-9101b17104e9 ;;
  *) echo "raw-images.sh: no DPS root type known for $(uname -m)" >&2; exit 1 ;;
esac
cache=${MCTL_IMAGE_CACHE:-/var/cache/mctl-test}
hash=$( (realpath "$tree"; cat "$0") | sha256sum | cut -c1-16)
ext=raw
[ "$kind" = squashfs ] && ext=squashfs
out=$cache/img-$kind-$hash.$ext
mkdir -p "$cache"
exec 9>"$cache/.img-$kind.lock"
flock 9
if [ -f "$out" ]; then echo "$out"; exit 0; fi
tmp=$cache/.build-img-$kind-$hash.$$
trap 'rm -f "$tmp" "$tmp.fs"' EXIT

# ext4 size: the tree plus half again and 64 MiB of headroom for a booting system's writes.
src=$tree label=root part_type=$root_type
[ "$kind" = usr ] && src=$tree/usr label=usr part_type=$usr_type
tree_mib=$(( $(du -sxm "$src" | cut -f1) ))
fs_mib=$(( tree_mib + tree_mib / 2 + 64 ))
mkext4() { mkfs.ext4 -q -F -L "$label" -O ^has_journal,^metadata_csum_seed -E root_owner=0:0 -d "$src" "$1" "${fs_mib}M" >/dev/null; }

case $kind in
  ext4)
    mkext4 "$tmp"
    ;;
  gpt|mbr|usr)
    mkext4 "$tmp.fs"
    disk_mib=$(( fs_mib + 2 ))
    truncate -s "${disk_mib}M" "$tmp"
    sectors=$(( fs_mib * 2048 ))
    if [ "$kind" != mbr ]; then
      printf 'label: gpt\nstart=2048, size=%s, type=%s, name="%s-%s"\n' "$sectors" "$part_type" "$label" "$(uname -m)" \
        | sfdisk --quiet --no-reread --no-tell-kernel "$tmp" >/dev/null
    else
      printf 'label: dos\nstart=2048, size=%s, type=83, bootable\n' "$sectors" \
        | sfdisk --quiet --no-reread --no-tell-kernel "$tmp" >/dev/null
    fi
    dd if="$tmp.fs" of="$tmp" bs=1M seek=1 conv=notrunc,sparse status=none
    rm -f "$tmp.fs"
    ;;
  squashfs)
    mksquashfs "$tree" "$tmp" -comp zstd -noappend -quiet -no-progress >/dev/null
    ;;
esac
mv "$tmp" "$out"
trap - EXIT
# Drop stale images of the same kind (older script or tree).
for old in "$cache"/img-"$kind"-*; do [ "$old" = "$out" ] || rm -f "$old"; done
echo "$out"
