# Host side of the "packages" group: build Corral's .debs from the shared build tree with
# packaging/build-debs (--fast: no -dbgsym, gzip), twice — the version of this tree and a newer
# one (VERSION+1) for the upgrade check — and hand them to the guest through the exchange
# folder: debs/v1/*.deb, debs/v2/*.deb, then debs/ready (or debs/failed with the reason).
set -eu
out=$CORRAL_VM_XCHG/debs
mkdir -p "$out"
trap '[ -e "$out/ready" ] || echo "host side failed, see host-side.log" > "$out/failed"' EXIT
build_debs=$CORRAL_SRC/packaging/build-debs
v1=$("$build_debs" --print-version)
v2=$v1+1
t0=$SECONDS
"$build_debs" --fast --build-dir "$CORRAL_BUILD" --out "$out/v1" --version "$v1"
"$build_debs" --fast --build-dir "$CORRAL_BUILD" --out "$out/v2" --version "$v2"
echo "$v1" > "$out/v1/version"
echo "$v2" > "$out/v2/version"
ls -l "$out"/v1/*.deb "$out"/v2/*.deb
echo "built versions $v1 and $v2 in $((SECONDS - t0)) s"
touch "$out/ready"
