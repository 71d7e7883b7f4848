#!/usr/bin/env python3
"""The singular values of every module of a PEFT adapter, the way the LoL reference code's numpy
path computes them (research/papers.md): per module, from the file, R_B of a QR of B and R_A of a
QR of Aᵀ, then the singular values of the r×r core R_B·R_Aᵀ (times the scale), in float64.
The comparison row of scripts/bench-process.sh: `lola inspect --json` does the same job.

Usage: numpy_singular_values.py ADAPTER_DIR   (adapter_model.safetensors, adapter_config.json)
Reads the safetensors header itself (numpy has no BF16: its bits are widened by a shift).
"""
import json
import struct
import sys

import numpy as np


def tensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        raw = memoryview(data)[base + begin : base + end]
        kind = t["dtype"]
        if kind == "BF16":
            values = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif kind == "F16":
            values = np.frombuffer(raw, np.float16)
        elif kind == "F32":
            values = np.frombuffer(raw, np.float32)
        elif kind == "F64":
            values = np.frombuffer(raw, np.float64)
        else:
            continue
        out[name] = values.reshape(t["shape"])
    return out


def main():
    folder = sys.argv[1]
    with open(folder + "/adapter_config.json") as f:
        config = json.load(f)
    weights = tensors(folder + "/adapter_model.safetensors")
    result = {}
    for key, A in weights.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[: -len(".lora_A.weight")]
        B = weights[name + ".lora_B.weight"]
        r = A.shape[0]
        scale = config["lora_alpha"] / r
        r_b = np.linalg.qr(B.astype(np.float64), mode="r")
        r_a = np.linalg.qr(A.T.astype(np.float64), mode="r")
        result[name] = (scale * np.linalg.svd(r_b @ r_a.T, compute_uv=False)).tolist()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
