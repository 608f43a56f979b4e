#!/usr/bin/env bash
# Renders an `optim compare` report in headless Chromium, to check it looks right as a person
# would see it: runs a short compare (or uses the report given), then writes a PNG screenshot.
#
#   tools/report/screenshot.sh [REPORT.html] [OUT.png]
#
# Needs chromium (`apt-get install -y chromium`).
set -euo pipefail
cd "$(dirname "$0")/../.."
report="${1:-}"
png="${2:-/tmp/optim-report.png}"
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[[ -n "$browser" ]] || { echo "error: no chromium; apt-get install -y chromium" >&2; exit 1; }
if [[ -z "$report" ]]; then
  swift build -c release --product optim
  out=$(mktemp -d /tmp/optim-compare.XXXXXX)
  .build/release/optim compare --epochs 20 --out "$out"
  report="$out/report.html"
fi
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1360,1250 \
  --screenshot="$png" "file://$(realpath "$report")" 2>/dev/null
echo "wrote $png ($(stat -c %s "$png") bytes) from $report"
