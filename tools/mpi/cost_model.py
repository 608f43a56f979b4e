#!/usr/bin/env python3
"""The cost of one data-parallel step from 1 to N nodes, from a measured link (DISTRIBUTED.md).

A ring allreduce of S bytes over W ranks takes 2(W-1) latency-bound hops and moves
2(W-1)/W * S bytes through each rank's link (the alpha-beta model of Thakur, Rabenseifner &
Gropp, 2005): t = 2(W-1) * alpha + 2(W-1)/W * S / B. swift-optim's DataParallel reduces the
gradients in buckets of 25 MB (one allreduce each); ZeRO-1 (ShardedOptimizer) adds an allgather
of the updated parameters: (W-1) * alpha + (W-1)/W * S / B.

Two regimes per step, with the measured single-process compute time T1 of one rank's batch:
  weak scaling   (each rank keeps its batch; the global batch grows with W):
                 step = T1 + t_comm, throughput = W / step (in single-process steps per second)
  strong scaling (the global batch is fixed and split W ways):
                 step = T1 / W + t_comm, speed-up = T1 / step
No overlap is assumed (swift-optim reduces after the backward pass); with perfect overlap the
communication would hide behind the backward pass up to its length.

  python3 tools/mpi/cost_model.py --latency 30e-6 --bandwidth 1.2e9 --parameters 800000 --step 0.042
"""
import argparse
import math

BUCKET_BYTES = 25 << 20


def allreduce(nbytes, ranks, alpha, bandwidth):
    if ranks == 1:
        return 0.0
    buckets = max(1, math.ceil(nbytes / BUCKET_BYTES))
    return buckets * 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * nbytes / bandwidth


def allgather(nbytes, ranks, alpha, bandwidth):
    if ranks == 1:
        return 0.0
    return (ranks - 1) * alpha + (ranks - 1) / ranks * nbytes / bandwidth


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, required=True, help="alpha: seconds per message (measured: small allreduce / (2(W-1)))")
    parser.add_argument("--bandwidth", type=float, required=True, help="B: bytes per second through one rank's link (measured bus bandwidth)")
    parser.add_argument("--parameters", type=int, required=True, help="float32 parameters (gradient bytes = 4x)")
    parser.add_argument("--step", type=float, required=True, help="T1: seconds of one rank's forward, backward and optimizer step")
    parser.add_argument("--zero1", action="store_true", help="add ZeRO-1's parameter allgather")
    parser.add_argument("--max-nodes", type=int, default=64)
    parser.add_argument("--label", default="")
    args = parser.parse_args()

    nbytes = 4 * args.parameters
    print(f"{args.label}: alpha {args.latency * 1e6:.1f} us, B {args.bandwidth / 1e9:.3f} GB/s, "
          f"{args.parameters:,} parameters ({nbytes / 1e6:.1f} MB of gradients), T1 {args.step * 1e3:.1f} ms"
          f"{', ZeRO-1' if args.zero1 else ''}")
    print("| nodes | communication (ms) | weak: step (ms) | weak: efficiency | strong: step (ms) | strong: speed-up |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    best = (1, 1.0)
    ranks = 1
    while ranks <= args.max_nodes:
        comm = allreduce(nbytes, ranks, args.latency, args.bandwidth)
        if args.zero1:
            comm += allgather(nbytes, ranks, args.latency, args.bandwidth)
        weak = args.step + comm
        strong = args.step / ranks + comm
        speedup = args.step / strong
        if speedup > best[1]:
            best = (ranks, speedup)
        print(f"| {ranks} | {comm * 1e3:.2f} | {weak * 1e3:.2f} | {args.step / weak:.0%} | {strong * 1e3:.2f} | {speedup:.1f}x |")
        ranks *= 2
    # Strong scaling stops where the compute saved by one more doubling no longer pays for the
    # communication it adds: the best power of two above.
    print(f"strong scaling peaks at {best[0]} nodes ({best[1]:.1f}x) in this range")


if __name__ == "__main__":
    main()
