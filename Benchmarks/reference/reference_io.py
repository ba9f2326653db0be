"""What the reference scripts share: reading the IDX data sets and writing golden vectors in
the format of Tests/SigPropTests/Fixtures (docs/golden-vectors.md)."""
import gzip
import json
import os

import numpy as np
import torch


def read_idx(path):
    """An IDX file (gzipped or not) as a uint8 array of its dimensions."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(data_dir, prefix):
    """Images of `prefix` ("train" or "t10k") flattened, pixel / 255, and int64 labels."""
    images = read_idx(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def tensor_json(t):
    """A tensor as {shape, dtype, data}: exact float32 values, or int64 ones."""
    t = t.detach()
    if t.dtype == torch.int64:
        data = [int(v) for v in t.reshape(-1).tolist()]
        dtype = "int64"
    else:
        data = [float(v) for v in t.to(torch.float32).reshape(-1).numpy().astype(np.float32)]
        dtype = "float32"
    return {"shape": list(t.shape), "dtype": dtype, "data": data}


def write_golden(folder, case, kind, description, config, inputs, out32, out64,
                 parameter_names, script):
    """Writes `case`'s file: the float32 outputs, and per output the largest difference from
    the same case run in float64. Returns the path and those differences."""
    diffs = {name: float((out32[name].double() - out64[name]).abs().max()) for name in out32}
    doc = {
        "name": case["name"],
        "kind": kind,
        "description": description,
        "config": config,
        "inputs": {name: tensor_json(t) for name, t in inputs.items()},
        "outputs": {name: tensor_json(t) for name, t in out32.items()},
        "f64_max_abs_diff": diffs,
        "parameter_names": parameter_names,
        "reference": {"script": script, "torch": torch.__version__},
        "seed": case["seed"],
    }
    path = os.path.join(folder, case["name"] + ".json")
    with open(path, "w") as f:
        f.write(json.dumps(doc, separators=(",", ":")))
    return path, diffs
