#!/usr/bin/env bash
# Builds troop-hub/troop-server:latest (the session image) from a static binary built here,
# with no registry. See images/build-local.sh.
exec "$(dirname "$0")/../build-local.sh" troop-server
