#!/usr/bin/env python3
"""Regenerate BENCHMARKS.md: every figure in it is measured by this run.

    python3 tools/bench/make_benchmarks.py            # full run (~10 minutes)
    python3 tools/bench/make_benchmarks.py --quick    # fewer repetitions, for a smoke test

Builds `optim` twice in release mode — the default build (`swift build -c release`, no flags: the
kernels for this CPU are chosen at run time) and one tuned for this CPU throughout
(`-Xswiftc -target-cpu -Xswiftc native`, the counterpart of the C reference's -march=native) — then
runs `optim bench --json` for every optimizer of the registry that has a C reference (read from
`optim list --json`: Swift beside the C reference, alternating, in one process),
tools/bench/pytorch_bench.py for those torch has (if torch is installed), the multi-tensor
comparison, 256M-parameter memory runs, and reads package-benchmark's malloc counts if a results
file is given. Every figure but the native column is the default build's.

A smoke test of the script itself (small sizes, two optimizers, no native build; its figures mean
nothing): `python3 tools/bench/make_benchmarks.py --quick --params 1048576 --multi-params 2048000
--memory-params 1048576 --optimizers adamw,lion --no-native --out /tmp/BENCHMARKS.md`.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NATIVE = [".build-native", ["-Xswiftc", "-target-cpu", "-Xswiftc", "native"]]
DEFAULT = [".build", []]


def run(command, **kwargs):
    print("$", " ".join(command), file=sys.stderr, flush=True)
    return subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, **kwargs).stdout


def build(scratch, flags):
    run(["swift", "build", "-c", "release", "--product", "optim", "--scratch-path", scratch] + flags)
    return os.path.join(ROOT, scratch, "release", "optim")


def bench(binary, *arguments):
    lines = run([binary, "bench", "--json"] + [str(a) for a in arguments]).strip().splitlines()
    return {row["implementation"]: row for row in map(json.loads, lines)}


def registry(binary):
    """The registry's table (`optim list --json`), one dict per optimizer, in registry order."""
    return [json.loads(line) for line in run([binary, "list", "--json"]).strip().splitlines()]


def benchmarked(table, only):
    """The optimizers `optim bench` compares with a C reference: every entry that has one (a kernel,
    or a wrapper's synchronisation kernel) and steps without a closure; `only` narrows them."""
    names = [row["name"] for row in table if row.get("c_reference") and not row["requires_closure"]]
    if only:
        unknown = [name for name in only if name not in names]
        if unknown:
            sys.exit(f"--optimizers: {', '.join(unknown)} not benchmarked (with a C reference: {', '.join(names)})")
        names = [name for name in names if name in only]
    return names


def torch_optimizers():
    """The optimizer names tools/bench/pytorch_bench.py has a torch implementation of (empty without torch)."""
    try:
        output = run([sys.executable, "tools/bench/pytorch_bench.py", "--list"])
    except (subprocess.CalledProcessError, OSError) as error:
        print(f"pytorch_bench.py --list failed ({error}): no torch rows", file=sys.stderr)
        return set()
    return set(output.split())


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    swift = run(["swift", "--version"]).splitlines()[0]
    gcc = run(["cc", "--version"]).splitlines()[0]
    try:
        torch = run([sys.executable, "-c", "import torch; print(torch.__version__)"]).strip()
    except subprocess.CalledProcessError:
        torch = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory / 2**20, "isa": isa, "kernel": platform.release(),
            "swift": swift, "cc": gcc, "torch": torch}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--params", type=int, default=64 << 20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--package-benchmark", help="output of `swift package benchmark` to read malloc counts from")
    parser.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    parser.add_argument("--repetitions", type=int, help="runs per figure (default 3; --quick: 1)")
    parser.add_argument("--optimizers", help="comma-separated registry names to run (default: every one with a C reference)")
    parser.add_argument("--multi-params", type=int, default=81920000, help="parameters of the multi-tensor comparison (20,000 tensors against one)")
    parser.add_argument("--memory-params", type=int, default=256 << 20, help="parameters of the peak-memory runs")
    parser.add_argument("--no-native", action="store_true", help="skip the -target-cpu native build and its column")
    args = parser.parse_args()
    repetitions, steps = (1, 8) if args.quick else (3, 20)
    repetitions = args.repetitions or repetitions
    info = machine()
    default = build(*DEFAULT)
    native = None if args.no_native else build(*NATIVE)
    table = registry(default)
    optimizers = benchmarked(table, args.optimizers.split(",") if args.optimizers else None)
    args.optimizer_list = optimizers
    args.display = {row["name"]: row["benchmark"]["display_name"] for row in table}
    common = ["--params", args.params, "--threads", args.threads, "--steps", steps]

    # Swift vs C, both builds: median over repetitions of each run's median.
    results = {}
    for name in optimizers:
        for label, binary in [("default", default), ("native", native)]:
            if binary is None:
                continue
            runs = [bench(binary, "--optimizer", name, *common) for _ in range(repetitions)]
            results[(name, label)] = {
                "swift": statistics.median(r["swift"]["seconds_per_step"] for r in runs),
                "c": statistics.median(r["c-reference"]["seconds_per_step"] for r in runs),
                "ratio": statistics.median(r["c-reference"]["seconds_per_step"] / r["swift"]["seconds_per_step"] for r in runs),
                "gbps": statistics.median(r["swift"]["gb_per_second"] for r in runs),
                "c_gbps": statistics.median(r["c-reference"]["gb_per_second"] for r in runs),
                "state": runs[0]["swift"]["state_bytes_per_param"],
                "bytes": runs[0]["swift"]["bytes_per_step"] / args.params,
                "isa": runs[0]["swift"].get("isa", "?"),
            }

    # Swift alone (no C steps in between) against PyTorch, alternating Swift and torch runs per
    # optimizer so that both see the same machine (its speed drifts by 10-20% over minutes).
    alone, torch_runs = {}, {}
    in_torch = torch_optimizers() if info["torch"] else set()
    # Those torch has, and Lion and AdamW for the Lion ÷ AdamW target.
    for name in [name for name in optimizers if name in in_torch or name in ("lion", "adamw")]:
        swift_runs = []
        for _ in range(repetitions):
            swift_runs.append(bench(default, "--optimizer", name, *common, "--no-reference")["swift"]["seconds_per_step"])
            if name not in in_torch:
                continue
            try:
                output = run([sys.executable, "tools/bench/pytorch_bench.py", "--params", str(args.params), "--threads",
                              str(args.threads), "--steps", str(steps), "--only", name])
            except subprocess.CalledProcessError as error:  # a torch run that fails loses its row only
                print(f"pytorch_bench.py --only {name} failed: {error}", file=sys.stderr)
                continue
            for row in map(json.loads, output.strip().splitlines()):
                torch_runs.setdefault((name, row["implementation"]), []).append(row)
        alone[name] = statistics.median(swift_runs)
    torch_rows = []
    for (name, implementation), rows in torch_runs.items():
        row = dict(rows[0])
        row["seconds_per_step"] = statistics.median(r["seconds_per_step"] for r in rows)
        torch_rows.append(row)

    # A step collecting the optimizer metrics, beside the same step without (alternating).
    overhead = {}
    for name in optimizers:
        runs = [bench(default, "--optimizer", name, *common, "--metrics", "--no-reference") for _ in range(repetitions)]
        overhead[name] = statistics.median(r["swift-metrics"]["seconds_per_step"] / r["swift"]["seconds_per_step"] for r in runs)

    # Multi-tensor: 20,000 x 4,096 against one tensor of the same size, alternating runs.
    one, many = [], []
    for _ in range(repetitions + 2):
        one.append(bench(default, "--optimizer", "adamw", "--params", args.multi_params, "--tensors", 1, "--threads", args.threads,
                         "--steps", steps, "--no-reference")["swift"]["seconds_per_step"])
        many.append(bench(default, "--optimizer", "adamw", "--params", args.multi_params, "--tensors", 20000, "--threads", args.threads,
                          "--steps", steps, "--no-reference")["swift"]["seconds_per_step"])
    multi = (statistics.median(one), statistics.median(many))

    # Peak resident memory of a run at 256M parameters (Swift side only).
    peaks = {}
    for name in optimizers:
        row = bench(default, "--optimizer", name, "--params", args.memory_params, "--threads", args.threads, "--steps", 3, "--no-reference")["swift"]
        peaks[name] = (row["peak_rss_bytes"], row["state_bytes_per_param"])

    mallocs = {}
    if args.package_benchmark:
        current = None
        for line in open(args.package_benchmark):
            match = re.match(r"^(baseline.*|step \S+ \S+)$", line.strip())
            if match:
                current = match.group(1)
            elif current and "Malloc (total)" in line:
                cells = [c.strip() for c in line.split("│") if c.strip()]
                mallocs[current] = cells[1:8]

    write(args, info, results, multi, peaks, torch_rows, mallocs, steps, repetitions, overhead, alone)


def write(args, info, results, multi, peaks, torch_rows, mallocs, steps, repetitions, overhead, alone):
    gib = f"{info['memory_gib']:.0f} GiB"
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python3 tools/bench/make_benchmarks.py` on {datetime.now(timezone.utc).strftime('%Y-%m-%d')}; every figure below was measured by that run.",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']} ({info['isa']}), {info['cores']} cores, {gib}, Linux {info['kernel']}",
        f"- {info['swift']}; C reference: {info['cc']}; PyTorch {info['torch'] or 'not installed'}",
        "",
        "## How it is measured",
        "",
        f"`optim bench --optimizer NAME --params {args.params} --threads {args.threads} --steps {steps} --json` builds the",
        "optimizer through the registry, allocates its state in a first step, then alternates timed steps of the Swift",
        "kernel and of the C reference kernel (`Sources/optim/Resources/reference_kernels.c`, compiled at run time with",
        "`cc -O3 -march=native -fopenmp -fno-math-errno`; OpenMP threads wait passively, like ours). Figures are",
        f"medians of {steps} steps; each row is the median of {repetitions} such runs. GB/s counts the bytes a step must",
        "move: parameter read and write, gradient read, each state buffer read and write.",
        "",
        "Two Swift builds: **default** (`swift build -c release`, no flags: the library compiles its kernels for",
        "baseline x86-64, AVX2 and AVX-512 and chooses at start-up from what the CPU reports; the path is in the",
        "table) and **native** (`swift build -c release -Xswiftc -target-cpu -Xswiftc native`, everything tuned for",
        "this CPU as the C reference is). Every figure except the native column is the default build's.",
        "",
        f"## Swift kernels against the C roofline ({args.params:,} float32 parameters, {args.threads} threads)",
        "",
        "| optimizer | bytes/param/step | kernel path | Swift s/step | Swift GB/s | C s/step | C GB/s | Swift ÷ C (default) | Swift ÷ C (native) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    optimizers = args.optimizer_list
    for name in optimizers:
        d, n = results[(name, "default")], results.get((name, "native"))
        native_ratio = f"{n['ratio']:.3f}" if n else "—"
        lines.append(f"| {args.display[name]} | {d['bytes']:.0f} | {d['isa']} | {d['swift']:.4f} | {d['gbps']:.1f} | {d['c']:.4f} | {d['c_gbps']:.1f} | "
                     f"{d['ratio']:.3f} | {native_ratio} |")
    lines += ["", "Each optimizer runs its registry entry's benchmark configuration (`optim list --json`, `benchmark`); a wrapper's",
              "synchronisation pass (Lookahead's, every k steps) is in the times but not in the byte count.", ""]

    if torch_rows:
        lines += [f"## Against PyTorch CPU ({torch_rows[0]['torch']}, same size and threads)", "",
                  "`tools/bench/pytorch_bench.py --only NAME` and `optim bench --no-reference` (Swift alone, not alternating with C)",
                  f"run in turn, {repetitions} times per optimizer, so both see the same machine; medians.", "",
                  "| optimizer | implementation | torch s/step | Swift s/step (default build) | Swift speed-up |", "| --- | --- | ---: | ---: | ---: |"]
        for row in torch_rows:
            ours = alone.get(row["optimizer"])
            if ours:
                lines.append(f"| {row['optimizer']} | {row['implementation']} | {row['seconds_per_step']:.4f} | {ours:.4f} | "
                             f"{row['seconds_per_step'] / ours:.2f}× |")
        lines.append("")

    lion, adamw = alone.get("lion"), alone.get("adamw")
    torch_by = {(r["optimizer"], r["implementation"]): r["seconds_per_step"] for r in torch_rows}
    targets = []
    for label in ["default", "native"]:
        ratios = [results[(n, label)]["ratio"] for n in optimizers if (n, label) in results]
        if ratios:
            targets.append((f"ours ÷ C reference throughput, every optimizer ({label} build)", "≥ 0.95",
                            f"{min(ratios):.3f} (min) … {max(ratios):.3f}", min(ratios) >= 0.95))
    if ("lion", "lion-pytorch") in torch_by and lion:
        speedup = torch_by[("lion", "lion-pytorch")] / lion
        targets.append(("Lion vs lion-pytorch", "≥ 8×", f"{speedup:.1f}×", speedup >= 8))
    if ("adamw", "torch-fused") in torch_by and adamw:
        speedup = torch_by[("adamw", "torch-fused")] / adamw
        targets.append(("AdamW vs torch fused AdamW", "≥ 1.0× (aim 1.15×)", f"{speedup:.2f}×", speedup >= 1.0))
    if ("sgd", "torch-fused") in torch_by and "sgd" in alone:
        speedup = torch_by[("sgd", "torch-fused")] / alone["sgd"]
        targets.append(("SGD momentum vs torch fused SGD", "≥ 1.0×", f"{speedup:.2f}×", speedup >= 1.0))
    if lion and adamw:
        targets.append(("Lion step time ÷ AdamW step time", "≤ 0.75", f"{lion / adamw:.3f}", lion / adamw <= 0.75))
    targets.append((f"20,000 tensors × {args.multi_params // 20000:,} vs one tensor of {args.multi_params:,} (AdamW)", "≤ 1.10×",
                    f"{multi[1] / multi[0]:.3f}× ({multi[1]:.4f} s vs {multi[0]:.4f} s)", multi[1] / multi[0] <= 1.10))
    worst_overhead = max(overhead.values())
    targets.append(("a step with metrics ÷ a step without (every optimizer)", "≤ 1.15",
                    f"{min(overhead.values()):.3f} … {worst_overhead:.3f}", worst_overhead <= 1.15))
    if mallocs:
        worst = max(int(cells[-1].replace(",", "")) for cells in mallocs.values() if cells and cells[-1].replace(",", "").isdigit())
        targets.append(("allocations per step after the first", "0", f"{worst} (max over all package-benchmark runs)", worst == 0))
    lines += ["## Targets", "", "| target | goal | measured | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {t} | {g} | {m} | {'yes' if ok else '**no**'} |" for t, g, m, ok in targets]
    lines.append("")

    lines += [f"## Optimizer metrics in the fused pass ({args.params:,} parameters)", "",
              "`optim bench --metrics --no-reference`: a step that also accumulates the six metric sums (Σm², Σp², Σu², Σg²,",
              "Σu·g, Σm·g) in the same pass, timed alternately with the same step without.", "",
              "| optimizer | with ÷ without |", "| --- | ---: |"]
    lines += [f"| {args.display[name]} | {overhead[name]:.3f} |" for name in optimizers]
    lines.append("")

    lines += ["## Memory", "",
              "Optimizer state is measured from the library's own allocation counter (bytes allocated by the first step);",
              f"peak resident memory is the whole `optim bench` process after 3 steps at {args.memory_params:,} parameters (Swift side only:",
              "parameters, gradients and state).", "",
              f"| optimizer | state bytes/param | peak RSS at {args.memory_params:,} params | peak RSS bytes/param |", "| --- | ---: | ---: | ---: |"]
    for name in optimizers:
        rss, state = peaks[name]
        lines.append(f"| {args.display[name]} | {state:.2f} | {rss / 2**30:.2f} GiB | {rss / args.memory_params:.2f} |")
    lines.append("")

    if mallocs:
        lines += ["## Allocations (package-benchmark)", "",
                  "`cd Benchmarks && swift package benchmark`: one step per iteration after a first step outside the measurement.", "",
                  "| benchmark | mallocs per iteration (p0 … p100) |", "| --- | --- |"]
        lines += [f"| {name} | {' / '.join(cells)} |" for name, cells in sorted(mallocs.items())]
        lines.append("")

    lines += open(os.path.join(ROOT, "tools/bench/notes.md")).read().splitlines()
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
