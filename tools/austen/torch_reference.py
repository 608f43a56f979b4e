#!/usr/bin/env python3
"""PyTorch reference for ExampleModel's GPT on Jane Austen (issue 14).

The model is nanoGPT's model.py (Karpathy, MIT) written out again below, with bias=True,
dropout=0 and GELU(approximate="tanh") to match the Swift model (nanoGPT's default GELU is the
exact erf form). The initial weights, the training batches and the validation batches come from
the same deterministic generators as the Swift side, ported here:

- SplitMix64 (ExampleModel/Math/SplitMix64.swift), streams as in Swift;
- GPT's normal initialiser (GPT.NormalInitialiser): stream "GPT" of the seed, Box-Muller with two
  draws per value, parameter after parameter in named_parameters() order, nanoGPT's sigmas;
- TextCorpus.fillBatch: windows at offsets from Lemire's bounded draw, stream = batch index for
  training, 2**62 + index for validation.

So `train` here starts from the very weights `optim train --task austen` starts from, and sees the
same batches in the same order; only the float arithmetic differs.

Commands (run with /tmp/venv/bin/python, torch 2.15):
  fixture OUT.safetensors   small model, one batch: initial weights, batch, loss, every gradient
  train [--iters N]         nanoGPT's CPU recipe on the six novels; prints val losses, time, JSON
  bench [--runs R]          tokens/s of forward + backward + clip + AdamW step, default config
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEXT = os.path.join(ROOT, "Sources", "ExampleModel", "Resources", "austen.txt")
MASK = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


# ---------------------------------------------------------------------------------------------
# SplitMix64 and the shared initialiser and batches

def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


class SplitMix64:
    def __init__(self, seed, stream=None):
        self.state = seed & MASK if stream is None else mix((seed ^ mix((stream + 0x5851F42D4C957F2D) & MASK)) & MASK)

    def next(self):
        self.state = (self.state + GAMMA) & MASK
        return mix(self.state)

    def below(self, bound):
        product = self.next() * bound
        if product & MASK < bound:
            threshold = ((1 << 64) - bound) % bound
            while product & MASK < threshold:
                product = self.next() * bound
        return product >> 64

    def draws(self, count):
        """The next `count` draws as a numpy uint64 array (draw i is mix(state + i*gamma))."""
        with np.errstate(over="ignore"):
            states = np.uint64(self.state) + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(GAMMA)
            z = states
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
        self.state = (self.state + count * GAMMA) & MASK
        return z


def normal_initialiser(seed):
    generator = SplitMix64(seed, stream=0x475054)  # "GPT"

    def draw(count, std):
        d = generator.draws(2 * count)
        u1 = ((d[0::2] >> np.uint64(11)).astype(np.float64) + 1) * 2.0 ** -53
        u2 = (d[1::2] >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
        return (std * np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)).astype(np.float32)
    return draw


class Corpus:
    def __init__(self, path=TEXT):
        text = open(path, encoding="utf-8").read()
        if not text:
            raise ValueError(f"{path}: the text is empty")
        self.vocabulary = sorted(set(text))
        ids = {c: i for i, c in enumerate(self.vocabulary)}
        self.tokens = np.array([ids[c] for c in text], dtype=np.int64)
        self.validation_start = len(self.tokens) * 9 // 10

    def split(self, name):
        return self.tokens[:self.validation_start] if name == "train" else self.tokens[self.validation_start:]

    def batch(self, split, index, seed, batch_size, context):
        part = self.split(split)
        generator = SplitMix64(seed, stream=((0 if split == "train" else 1 << 62) + index) & MASK)
        offsets = [generator.below(len(part) - context) for _ in range(batch_size)]
        x = np.stack([part[o:o + context] for o in offsets])
        y = np.stack([part[o + 1:o + 1 + context] for o in offsets])
        return torch.from_numpy(x), torch.from_numpy(y)


# ---------------------------------------------------------------------------------------------
# nanoGPT's model (model.py), bias=True, no dropout, tanh GELU

class LayerNorm(nn.Module):
    def __init__(self, ndim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.n_head, self.n_embd = n_head, n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd, gelu):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU(approximate=gelu)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, gelu):
        super().__init__()
        self.ln_1 = LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = LayerNorm(n_embd)
        self.mlp = MLP(n_embd, gelu)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, gelu="tanh"):
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([Block(n_embd, n_head, gelu) for _ in range(n_layer)]),
            ln_f=LayerNorm(n_embd),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.n_layer = n_layer

    def initialise(self, seed):
        """The Swift model's initial weights (nanoGPT's distribution, the shared generator)."""
        draw = normal_initialiser(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                    p.fill_(1)
                elif name.endswith(".bias"):
                    p.zero_()
                else:
                    std = 0.02 / math.sqrt(2 * self.n_layer) if name.endswith("c_proj.weight") else 0.02
                    p.copy_(torch.from_numpy(draw(p.numel(), std)).view(p.shape))

    def forward(self, idx, targets):
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# ---------------------------------------------------------------------------------------------

def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(array)), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)


def fixture(args):
    corpus = Corpus()
    config = dict(vocab_size=len(corpus.vocabulary), block_size=16, n_layer=2, n_head=2, n_embd=16)
    batch, context, seed = 3, 16, 7
    model = GPT(**config)
    model.initialise(seed)
    initial = {f"param/{n}": p.detach().numpy().copy() for n, p in model.named_parameters()}
    x, y = corpus.batch("train", 5, seed, batch, context)
    loss = model(x, y)
    loss.backward()
    tensors = dict(initial)
    tensors["inputs"] = x.numpy().astype(np.float32)
    tensors["targets"] = y.numpy().astype(np.float32)
    tensors["loss"] = np.array([loss.item()], dtype=np.float32)
    for n, p in model.named_parameters():
        tensors[f"grad/{n}"] = p.grad.numpy()
    metadata = {k: str(v) for k, v in config.items()}
    metadata.update(batch=str(batch), seed=str(seed), batch_index="5", split="train", torch=torch.__version__,
                    loss=repr(loss.item()), generator="tools/austen/torch_reference.py fixture")
    write_safetensors(args.out, tensors, metadata)
    print(f"wrote {args.out}: loss {loss.item():.6f}, {len(tensors)} tensors, {os.path.getsize(args.out)} bytes")


def make_optimizer(model, lr, weight_decay, betas):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=betas)


def learning_rate(step, args):
    """The Swift Trainer's schedule (TrainingConfiguration.learningRateSchedule): a linear warm-up
    from lr/warmup to lr over `warmup` steps (LinearSchedule.warmup), then a cosine decay to
    min_lr spanning the remaining steps plus one (CosineDecaySchedule with floor min_lr/lr)."""
    if step < args.warmup:
        start = 1 / args.warmup
        return args.lr * (start + (1 - start) * step / args.warmup)
    rest = max(1, args.iters - args.warmup) + 1
    floor = args.min_lr / args.lr
    return args.lr * (floor + (1 - floor) * (1 + math.cos(math.pi * min(step - args.warmup, rest) / rest)) / 2)


@torch.no_grad()
def validation_loss(model, corpus, args):
    model.eval()
    losses = [model(*corpus.batch("validation", i, args.seed, args.batch, args.context)).item() for i in range(args.eval_batches)]
    model.train()
    return sum(losses) / len(losses)


def train(args):
    torch.set_num_threads(args.threads)
    corpus = Corpus()
    model = GPT(len(corpus.vocabulary), args.context, args.layers, args.heads, args.embedding)
    model.initialise(args.seed)
    optimizer = make_optimizer(model, args.lr, args.weight_decay, (0.9, args.beta2))
    start = time.time()
    history = []
    for step in range(args.iters):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        x, y = corpus.batch("train", step, args.seed, args.batch, args.context)
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.iters:
            val = validation_loss(model, corpus, args)
            history.append({"step": step + 1, "train_loss": loss.item(), "val_loss": val, "seconds": time.time() - start})
            print(f"step {step + 1}: train loss {loss.item():.4f}, val loss {val:.4f}, {time.time() - start:.1f} s", flush=True)
    result = {"val_loss": history[-1]["val_loss"], "seconds": time.time() - start, "history": history, "torch": torch.__version__,
              "threads": args.threads}
    print(json.dumps(result))


def bench(args):
    torch.set_num_threads(args.threads)
    corpus = Corpus()
    model = GPT(len(corpus.vocabulary), args.context, args.layers, args.heads, args.embedding, gelu=args.gelu)
    model.initialise(0)
    optimizer = make_optimizer(model, 1e-3, 0.1, (0.9, 0.99))
    batches = [corpus.batch("train", i, 0, args.batch, args.context) for i in range(args.steps)]

    def step(x, y):
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for x, y in batches[:args.warmup_steps]:
        step(x, y)
    rates = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for x, y in batches:
            step(x, y)
        rates.append(args.steps * args.batch * args.context / (time.perf_counter() - start))
    rates.sort()
    print(json.dumps({"tokens_per_second": rates[len(rates) // 2], "runs": rates, "threads": args.threads,
                      "torch": torch.__version__, "gelu": args.gelu}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fixture")
    f.add_argument("out")
    for name in ("train", "bench"):
        p = sub.add_parser(name)
        p.add_argument("--layers", type=int, default=4)
        p.add_argument("--heads", type=int, default=4)
        p.add_argument("--embedding", type=int, default=128)
        p.add_argument("--context", type=int, default=64)
        p.add_argument("--batch", type=int, default=12)
        p.add_argument("--threads", type=int, default=2)
    t = sub.choices["train"]
    t.add_argument("--iters", type=int, default=2000)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--min-lr", type=float, default=1e-4)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--beta2", type=float, default=0.99)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--clip", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--eval-batches", type=int, default=20)
    b = sub.choices["bench"]
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--warmup-steps", type=int, default=5)
    b.add_argument("--runs", type=int, default=5)
    b.add_argument("--gelu", default="tanh", choices=["tanh", "none"])
    args = parser.parse_args()
    {"fixture": fixture, "train": train, "bench": bench}[args.command](args)


if __name__ == "__main__":
    main()
