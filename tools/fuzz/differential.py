#!/usr/bin/env python3
"""Differential check: our reader against Python's reference reader, over a fuzzing corpus.

    python3 tools/fuzz/differential.py [--binary /tmp/fuzz-safetensors/fuzz-safetensors] [DIR_OR_FILE ...]

The fuzz binary built by run.sh prints each input's verdict when FUZZ_VERDICTS is set; this runs
it over every file (default: the corpus run.sh grew, /tmp/fuzz-safetensors/corpus) and compares
with `safetensors.deserialize` (pip install safetensors). A file one reader accepts and the other
refuses is printed, grouped by our error message. Differences that are deliberate (this reader is
stricter than the reference in a few documented ways, or knows fewer dtypes) are counted
separately; the exit status is 1 when any other difference is found.
"""
import argparse
import collections
import os
import re
import subprocess
import sys

# Our refusals of files the reference accepts, on purpose: (pattern in our message, why).
DELIBERATE = [
    (r"unknown field '", "entries may hold only dtype, shape and data_offsets (the reference ignores others)"),
    (r"^tensor '.*' appears twice in the header", "duplicate tensor names are refused (the reference keeps the last)"),
    (r"__metadata__ key '.*' appears twice", "duplicate metadata keys are refused (the reference keeps the last)"),
    (r"unknown dtype \"(F8_|F6_|F4|E8M0|C64)", "8-bit, 6-bit and 4-bit float and complex dtypes are not supported"),
]


def inputs(paths):
    for path in paths:
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                if os.path.isfile(full):
                    yield full
        elif os.path.isfile(path):
            yield path


def ours(binary, files):
    """Our verdict for each file: None for accepted, else the error message."""
    verdicts = {}
    env = dict(os.environ, FUZZ_VERDICTS="1", SWIFT_BACKTRACE="enable=no")
    for start in range(0, len(files), 256):
        batch = files[start:start + 256]
        result = subprocess.run([binary, *batch], env=env, capture_output=True, text=True, errors="replace")
        current = None
        for line in result.stderr.splitlines():
            if line.startswith("Running: "):
                current = line[len("Running: "):]
            elif line.startswith("VERDICT ") and current is not None:
                verdicts[current] = None if line == "VERDICT accept" else line[len("VERDICT refuse "):]
        missing = [f for f in batch if f not in verdicts]
        if missing:
            sys.exit(f"no verdict for {missing[0]} (exit {result.returncode}); a crash? run it alone:\n"
                     f"  {binary} {missing[0]}\n{result.stderr[-3000:]}")
    return verdicts


def reference(path):
    from safetensors import deserialize
    with open(path, "rb") as f:
        content = f.read()
    try:
        deserialize(content)
        return None
    except Exception as error:  # the reference raises SafetensorError, or others for odd input
        return f"{type(error).__name__}: {error}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="/tmp/fuzz-safetensors/fuzz-safetensors")
    parser.add_argument("--show", type=int, default=3, help="examples shown per group")
    parser.add_argument("paths", nargs="*", default=["/tmp/fuzz-safetensors/corpus"])
    args = parser.parse_args()
    files = list(inputs(args.paths))
    if not files:
        sys.exit("no input files")
    mine = ours(args.binary, files)
    groups = collections.defaultdict(list)
    agree = deliberate = 0
    for path in files:
        us, them = mine[path], reference(path)
        if (us is None) == (them is None):
            agree += 1
            continue
        if us is not None and any(re.search(pattern, us) for pattern, _ in DELIBERATE):
            deliberate += 1
            continue
        key = ("we accept, the reference refuses" if us is None else "we refuse, the reference accepts",
               re.sub(r"\d+", "N", them if us is None else us)[:120])
        groups[key].append((path, us, them))
    print(f"{len(files)} files: {agree} agree, {deliberate} differ on purpose, "
          f"{sum(len(g) for g in groups.values())} differ otherwise")
    for reason, _ in DELIBERATE:
        print(f"  on purpose: {reason}")
    for (direction, message), cases in sorted(groups.items(), key=lambda item: -len(item[1])):
        print(f"\n{direction} ({len(cases)}): {message}")
        for path, us, them in cases[:args.show]:
            print(f"  {path}\n    ours: {us or 'accepted'}\n    reference: {them or 'accepted'}")
    return 1 if groups else 0


if __name__ == "__main__":
    sys.exit(main())
