#!/usr/bin/env bash
# The kernel modules (OptimKernelsAVX2, OptimKernelsAVX512) must define no code under Optim's
# symbol names: an out-of-line specialization or closure of one of Optim's generic functions is a
# weak symbol of the same name in each kernel module and in Optim, the linker keeps one copy, and a
# path would then run another path's instructions (on a CPU without them: an illegal instruction).
# The kernels' entry points are therefore @_transparent and the closures are written in the kernel
# modules (members of extensions declared in a kernel module carry its name and are fine). Usage: tools/check-kernel-symbols.sh [.build/debug]
set -euo pipefail
build="${1:-.build/debug}"
status=0
for object in "$build"/OptimKernels*.build/*.swift.o; do
  [ -e "$object" ] || { echo "no kernel module objects under $build"; exit 1; }
  shared=$(nm "$object" | awk '$2 ~ /^[WTt]$/ {print $3}' | grep '^\$s5Optim' | grep -vE 'Kernels(AVX2|AVX512)' | swift demangle --simplified \
    | grep -vE 'protocol witness|metadata|outlined (consume|copy|destroy|retain|release)' || true)
  if [ -n "$shared" ]; then
    echo "$object defines code under Optim's names (inline it: @_transparent):"; echo "$shared" | head -20; status=1
  fi
done
[ $status -eq 0 ] && echo "kernel modules: no code under Optim's symbol names"
exit $status
