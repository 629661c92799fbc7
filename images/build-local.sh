#!/usr/bin/env bash
# Builds images on this machine from static binaries built by cargo: no registry, no base image,
# no buildx. Each image's context (the binary, its Dockerfile.prebuilt, extra files) is kept in
# target/prebuilt/<image>/ so compose.prebuilt.yaml can build from it too.
#   images/build-local.sh              both images
#   images/build-local.sh troop-server troop-hub/troop-server:latest (sessions)
#   images/build-local.sh hub          troop-hub/hub:latest (the hub)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target="$(uname -m)-unknown-linux-gnu"
static_dir="$root/target/static"

# build_image PACKAGE PROFILE TAG IMAGE_DIR [EXTRA_FILE...]
# (the session server uses the `session` profile: optimised for size, see Cargo.toml)
build_image() {
  local package=$1 profile=$2 tag=$3 dir=$4
  shift 4
  RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile "$profile" -q -p "$package" --target "$target" --target-dir "$static_dir" \
    --manifest-path "$root/Cargo.toml"
  local ctx="$root/target/prebuilt/$dir"
  mkdir -p "$ctx"
  cp "$static_dir/$target/$profile/$package" "$ctx/$package"
  cp "$root/images/$dir/Dockerfile.prebuilt" "$ctx/Dockerfile"
  for extra in "$@"; do cp "$root/$extra" "$ctx/"; done
  # The legacy builder needs no buildx; its deprecation notice is shown only if the build fails.
  local log
  if ! log=$(DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" 2>&1); then
    echo "$log" >&2
    echo "docker build of $tag failed" >&2
    exit 1
  fi
  echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
}

case "${1:-all}" in
  troop-server) build_image troop-server session troop-hub/troop-server:latest troop-server ;;
  hub) build_image troop-hub release troop-hub/hub:latest hub hub.yaml ;;
  all)
    build_image troop-server session troop-hub/troop-server:latest troop-server
    build_image troop-hub release troop-hub/hub:latest hub hub.yaml
    ;;
  *) echo "usage: $0 [troop-server|hub|all]" >&2; exit 2 ;;
esac
