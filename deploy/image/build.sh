#!/bin/sh
# Builds the sipvip container image: a static binary (glibc, crt-static: no NSS, no loader)
# in an image FROM scratch, with Debian's podman. Usage: build.sh [TAG] (default sipvip:dev).
# Run from anywhere; builds into <workspace>/target/static and stages in target/image.
set -eu
tag="${1:-sipvip:dev}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
triple="$(rustc -vV | sed -n 's/^host: //p')"
cd "$root"
RUSTFLAGS="-C target-feature=+crt-static" \
CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build -q --release --locked -p sipvip --bin sipvip \
    --target "$triple" --target-dir target/static
mkdir -p target/image
cp "target/static/$triple/release/sipvip" target/image/sipvip
cp deploy/image/Containerfile target/image/Containerfile
podman --runtime runc --cgroup-manager=cgroupfs build -q -t "$tag" target/image
