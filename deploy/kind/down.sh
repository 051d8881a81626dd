#!/usr/bin/env bash
# Deletes the kind cluster made by up.sh, with everything in it (volumes included).
set -euo pipefail
CLUSTER="${KIND_CLUSTER:-kuberaft}"
kind delete cluster --name "$CLUSTER"
