#!/usr/bin/env bash
# Builds both images on this machine from static binaries built by cargo, with no registry and
# no base image: troop-hub/troop-server:latest (sessions) and troop-hub/hub:latest (the hub).
# compose.prebuilt.yaml uses them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target="$(uname -m)-unknown-linux-gnu"
static_dir="$root/target/static"

"$root/images/troop-server/build-local.sh" troop-hub/troop-server:latest

RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release -q -p troop-hub --target "$target" --target-dir "$static_dir" \
  --manifest-path "$root/Cargo.toml"

# A persistent build context, so compose.prebuilt.yaml can build from it too.
ctx="$root/target/prebuilt/hub"
mkdir -p "$ctx"
cp "$static_dir/$target/release/troop-hub" "$ctx/troop-hub"
cp "$root/hub.yaml" "$ctx/hub.yaml"
cp "$root/images/hub/Dockerfile.prebuilt" "$ctx/Dockerfile"
if ! log=$(DOCKER_BUILDKIT=0 docker build -q -t troop-hub/hub:latest "$ctx" 2>&1); then
  echo "$log" >&2
  echo "docker build of troop-hub/hub:latest failed" >&2
  exit 1
fi
echo "built troop-hub/hub:latest ($(docker image inspect -f '{{.Size}}' troop-hub/hub:latest) bytes)"
