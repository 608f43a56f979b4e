#!/usr/bin/env python3
"""Test corpus for the Swift safetensors reader.

    python3 tools/safetensors/make_corpus.py --out Tests/Fixtures/safetensors

malformed/*.safetensors: hand-made broken files, each breaking one rule of the format (the file
name says which); every one must be refused with an error, never a crash.
valid/*.safetensors: files written by Python's `safetensors.numpy.save_file` (the reference
writer), with valid/expected.json holding their tensors' values, for the interop test.
"""
import argparse
import json
import os
import struct


def header_file(header, data=b"", length=None, raw_header=None):
    body = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(body) if length is None else length) + body + data


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


def malformed():
    good = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    yield "empty", b""
    yield "short-length", b"\x05\x00\x00"
    yield "length-only", struct.pack("<Q", 10)
    yield "length-past-end", header_file(good, f32(1, 2), length=10_000)
    yield "huge-header-length", struct.pack("<Q", 1 << 62) + b"{}"
    yield "header-over-100mb", struct.pack("<Q", 100_000_001) + b"{" + b" " * 64
    yield "not-brace-start", header_file(None, raw_header=b' {"a":1}')
    yield "array-header", header_file(None, raw_header=b"[1,2]")
    yield "bad-json-unterminated", header_file(None, raw_header=b'{"a":{"dtype":"F32"')
    yield "bad-json-trailing", header_file(None, raw_header=b'{"a":1} x')
    yield "bad-json-control-char", header_file(None, raw_header=b'{"a\x01":1}')
    yield "bad-json-escape", header_file(None, raw_header=b'{"a\\q":1}')
    yield "bad-json-deep-nesting", header_file(None, raw_header=b'{"a":' + b"[" * 200 + b"]" * 200 + b"}")
    yield "bad-utf8-name", header_file(None, raw_header=b'{"\xff\xfe":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}')
    yield "unknown-dtype", header_file({"a": {"dtype": "F31", "shape": [2], "data_offsets": [0, 8]}}, f32(1, 2))
    yield "dtype-not-string", header_file({"a": {"dtype": 4, "shape": [2], "data_offsets": [0, 8]}}, f32(1, 2))
    yield "missing-dtype", header_file({"a": {"shape": [2], "data_offsets": [0, 8]}}, f32(1, 2))
    yield "missing-shape", header_file({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, f32(1, 2))
    yield "missing-offsets", header_file({"a": {"dtype": "F32", "shape": [2]}}, f32(1, 2))
    yield "extra-field", header_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}}, f32(1, 2))
    yield "negative-dimension", header_file({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, f32(1, 2))
    yield "float-dimension", header_file({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}}, f32(1, 2))
    yield "shape-overflow", header_file({"a": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 8]}}, f32(1, 2))
    yield "offsets-three", header_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}}, f32(1, 2))
    yield "offsets-reversed", header_file({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}, f32(1, 2))
    yield "offsets-past-end", header_file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, f32(1, 2))
    yield "lying-size", header_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, f32(1, 2))
    yield "overlapping", header_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, f32(1, 2, 3))
    yield "hole", header_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                               "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}, f32(1, 2, 3))
    yield "trailing-bytes", header_file(good, f32(1, 2, 3))
    yield "duplicate-name", header_file(None, raw_header=b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                                        b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', data=f32(1, 2))
    yield "metadata-not-object", header_file({"__metadata__": ["x"], **good}, f32(1, 2))
    yield "metadata-number-value", header_file({"__metadata__": {"k": 1}, **good}, f32(1, 2))
    yield "entry-not-object", header_file({"a": [1, 2]}, f32(1, 2))
    yield "truncated-data", header_file(good, f32(1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    bad = os.path.join(args.out, "malformed")
    os.makedirs(bad, exist_ok=True)
    for index, (name, content) in enumerate(malformed()):
        with open(os.path.join(bad, f"{index:02d}-{name}.safetensors"), "wb") as f:
            f.write(content)

    import numpy as np
    from safetensors.numpy import save_file
    valid = os.path.join(args.out, "valid")
    os.makedirs(valid, exist_ok=True)
    rng = np.random.default_rng(0)
    expected = {}
    files = {
        "python-f32.safetensors": ({"weight": rng.standard_normal((3, 4)).astype(np.float32),
                                    "bias": rng.standard_normal(4).astype(np.float32),
                                    "scalar": np.array(2.5, dtype=np.float32)}, {"source": "safetensors.numpy", "note": "héllo \"quoted\""}),
        "python-mixed.safetensors": ({"half": rng.standard_normal(5).astype(np.float16),
                                      "double": rng.standard_normal((2, 2)).astype(np.float64),
                                      "ints": np.arange(6, dtype=np.int64).reshape(2, 3),
                                      "empty": np.zeros((0, 3), dtype=np.float32)}, None),
    }
    for file, (tensors, metadata) in files.items():
        save_file(tensors, os.path.join(valid, file), metadata=metadata)
        expected[file] = {"metadata": metadata or {}, "tensors": {
            name: {"dtype": str(value.dtype), "shape": list(value.shape),
                   "values": [float(x) for x in value.astype(np.float64).ravel()]} for name, value in tensors.items()}}
    with open(os.path.join(valid, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
