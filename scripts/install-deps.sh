#!/usr/bin/env bash
# Installs the Debian packages limaml needs, once. Idempotent and quiet when everything is there.
# Usage: scripts/install-deps.sh [build|test|all]   (default: build)
#        scripts/install-deps.sh --only PKG...      (those packages: what the setup-*.sh need)
set -euo pipefail

want=${1:-build}
build_pkgs=(build-essential cmake pkg-config libxxhash-dev libcjson-dev liblmdb-dev libhiredis-dev libmicrohttpd-dev libcurl4-openssl-dev libopenblas-dev)
test_pkgs=(python3-torch python3-venv redis-server redis-tools wrk clang-format)
case "$want" in
  build) pkgs=("${build_pkgs[@]}") ;;
  test|all) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  --only) shift; [ $# -gt 0 ] || { echo "usage: $0 --only PKG..." >&2; exit 2; }; pkgs=("$@") ;;
  *) echo "usage: $0 [build|test|all] | --only PKG..." >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
