#!/usr/bin/env bash
# Builds the session image (default tag troop-hub/troop-server:latest) on this machine from a
# static troop-server binary built by cargo: no registry, no base image, no buildx needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tag=${1:-troop-hub/troop-server:latest}
target="$(uname -m)-unknown-linux-gnu"
static_dir="$root/target/static"

RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release -q -p troop-server --target "$target" --target-dir "$static_dir" \
  --manifest-path "$root/Cargo.toml"

# A persistent build context, so compose.prebuilt.yaml can build from it too.
ctx="$root/target/prebuilt/troop-server"
mkdir -p "$ctx"
cp "$static_dir/$target/release/troop-server" "$ctx/troop-server"
cp "$root/images/troop-server/Dockerfile.prebuilt" "$ctx/Dockerfile"
# The legacy builder needs no buildx; its deprecation notice is only shown if the build fails.
if ! log=$(DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" 2>&1); then
  echo "$log" >&2
  echo "docker build of $tag failed" >&2
  exit 1
fi
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
