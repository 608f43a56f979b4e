#!/bin/sh
# Regenerates Sources/ExampleModel/Resources/austen.txt from Debian's r-cran-janeaustenr:
#   apt-get install -y r-cran-janeaustenr r-base-core && tools/austen/extract.sh
set -eu
cd "$(dirname "$0")/../.."
out=Sources/ExampleModel/Resources/austen.txt
Rscript tools/austen/extract.R "$out"
echo "$out: $(wc -c < "$out") bytes, $(wc -m < "$out") characters"
sha256sum "$out"
