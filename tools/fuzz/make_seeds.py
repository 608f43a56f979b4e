#!/usr/bin/env python3
"""Extra fuzzing seeds: small valid files covering what the committed corpus does not (every
dtype, zero-size tensors, escapes and non-ASCII in names and metadata, padding). Written to
tools/fuzz/seeds/ once; run.sh copies them, with the test corpus, into its scratch corpus.

    python3 tools/fuzz/make_seeds.py
"""
import json
import os
import struct

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
         "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def build(tensors, metadata=None, pad=True, raw_names=None):
    """tensors: list of (name, dtype, shape, bytes) in data order."""
    header, offset, body = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        body += data
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if pad:
        text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + body


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
    os.makedirs(out, exist_ok=True)
    seeds = {}
    seeds["all-dtypes"] = build([(d.lower(), d, [2], bytes(range(1, 2 * n + 1))) for d, n in SIZES.items()])
    seeds["floats-special"] = build([
        ("f16", "F16", [4], struct.pack("<4e", 1.0, -0.0, float("inf"), 6.1e-5)),
        ("bf16", "BF16", [2, 1], b"\x80\x3f\xc0\x7f"),
        ("f64", "F64", [1, 1, 1], struct.pack("<d", 1e300)),
        ("f32", "F32", [], struct.pack("<f", float("nan")))])
    seeds["zero-size"] = build([("e0", "F32", [0], b""), ("e1", "U8", [3, 0, 5], b""), ("x", "I8", [1], b"\x7f"),
                                ("e2", "BF16", [0, 0], b"")])
    seeds["metadata-escapes"] = build([("w\u00e9/\u03bc\n\"q\"", "F32", [1], struct.pack("<f", 2.5))],
                                      metadata={"k\u2028": "v\\\"\t\u0001", "": "", "emoji": "\U0001F600"})
    seeds["empty-header"] = build([], pad=False)
    seeds["metadata-only"] = build([], metadata={"format": "pt"})
    raw = b'{ "a" : { "shape" : [ 1 ] , "data_offsets" : [ 0 , 2 ] , "dtype" : "U16" } , "__metadata__" : { "x\\u00e9\\ud83d\\ude00" : "\\/\\b\\f\\r" } }   '
    seeds["whitespace-escapes"] = struct.pack("<Q", len(raw)) + raw + b"\x01\x02"
    for name, content in seeds.items():
        with open(os.path.join(out, f"seed-{name}.safetensors"), "wb") as f:
            f.write(content)


if __name__ == "__main__":
    main()
