#!/usr/bin/env bash
# Builds tools/downstream (a package depending on swift-optim by version) in release against a
# tagged clone of this repository's HEAD, runs it, and checks that it used the kernels for this CPU.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repository="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone --quiet "$repository" "$work/swift-optim"
git -C "$work/swift-optim" tag 0.1.0
cp -R "$here" "$work/downstream"
rm -rf "$work/downstream/.build"
cd "$work/downstream"
export OPTIM_PACKAGE_URL="$work/swift-optim" OPTIM_PACKAGE_VERSION=0.1.0
swift build -c release
.build/release/downstream
