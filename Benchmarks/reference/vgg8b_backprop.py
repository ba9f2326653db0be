"""End-to-end backprop baseline for the VGG presets of Nokland & Eidnes 2019 ("Training neural
networks with local error signals"): the same networks SigProp trains forward-only, trained
here with ordinary backpropagation of the output's cross entropy, CPU only.

The blocks match SigProp's: conv 3x3 stride 1 padding 1 (bias) -> InstanceNorm2d(affine) ->
LeakyReLU(0.01); dense Linear -> LayerNorm -> LeakyReLU(0.01); 2x2 max pools that pool the
edge of a side they do not divide (ceil_mode, as SigProp's presets; --floor-pools drops it);
then the output Linear. The comparison is therefore of the learning rule, not of the layers.

Data: Fashion-MNIST IDX files (gzipped or not) or CIFAR-10 binary batches (data_batch_1.bin ...
test_batch.bin) in --data-dir, normalised per channel by the whole training split's mean and std.

Setup: pip install torch numpy
  (CPU wheel: pip install torch --index-url https://download.pytorch.org/whl/cpu)

Usage:
  python3 vgg8b_backprop.py --epochs 10                       # vgg8b on Fashion-MNIST
  python3 vgg8b_backprop.py --model vgg11b --width-multiplier 0.5 --limit 10000 --epochs 1
  python3 vgg8b_backprop.py --data-dir <cifar-10-batches-bin> --crop-padding 4 --flip
  python3 vgg8b_backprop.py --batches 20 --threads 2          # samples/s of 20 timed batches

Output (stdout, one JSON object a line): first the model (parameters, per-layer output shapes),
then per epoch {"epoch", "train_accuracy", "test_accuracy", "seconds", "samples_per_second",
"peak_rss_bytes"}; with --batches one line with the samples/s of the timed batches.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import reference_io

NEG_SLOPE = 0.01
PRESETS = {
    "vgg6b": [128, "pool", 256, "pool", 512, "pool", 512, "pool", "dense1024"],
    "vgg8b": [128, 256, "pool", 256, 512, "pool", 512, "pool", 512, "pool", "dense1024"],
    "vgg11b": [128, 128, 128, 256, "pool", 256, 512, "pool", 512, 512, "pool", 512, "pool",
               "dense1024"],
}


# ---------------------------------------------------------------- data
def idx_file(data_dir, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    sys.exit(f"error: neither {name} nor {name}.gz in {data_dir}")


def read_cifar(paths):
    # Each record is one label byte followed by a 3x32x32 image, channel-major.
    raw = np.concatenate([np.fromfile(p, dtype=np.uint8).reshape(-1, 1 + 3 * 32 * 32)
                          for p in paths])
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0]


def load_data(data_dir):
    """Returns (x_train, y_train, x_test, y_test) as float32 NCHW / int64 tensors, normalised."""
    if os.path.exists(os.path.join(data_dir, "data_batch_1.bin")):
        x_tr, y_tr = read_cifar([os.path.join(data_dir, f"data_batch_{i}.bin")
                                 for i in range(1, 6)])
        x_te, y_te = read_cifar([os.path.join(data_dir, "test_batch.bin")])
    else:
        x_tr, y_tr, x_te, y_te = (
            reference_io.read_idx(idx_file(data_dir, f"{split}-{kind}-idx{n}-ubyte"))
            for split in ("train", "t10k") for kind, n in (("images", 3), ("labels", 1)))
        x_tr, x_te = x_tr[:, None], x_te[:, None]
    x_tr, x_te = (torch.from_numpy(a.astype(np.float32) / 255.0) for a in (x_tr, x_te))
    # Statistics of the whole training split, before --limit, as SigProp computes them.
    mean = x_tr.mean(dim=(0, 2, 3), keepdim=True)
    std = x_tr.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return ((x_tr - mean) / std, torch.from_numpy(y_tr.astype(np.int64)),
            (x_te - mean) / std, torch.from_numpy(y_te.astype(np.int64)))


def augment(x, padding, flip):
    """SigProp's augmentation: per-sample random crop of the zero-padded image, random
    horizontal flip with p=0.5. Zero padding on normalised images pads with the mean colour."""
    n, _, h, w = x.shape
    # The draws are made on the CPU whatever the device, so a GPU run sees the CPU run's crops.
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (n,))
        ox = torch.randint(0, 2 * padding + 1, (n,))
        rows = (oy[:, None] + torch.arange(h))[:, :, None].to(x.device)
        cols = (ox[:, None] + torch.arange(w))[:, None, :].to(x.device)
        # Advanced indexing puts the indexed (N, H, W) dimensions first, channels last.
        samples = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[samples, rows, cols]
        x = x.permute(0, 3, 1, 2).contiguous()
    if flip:
        mirror = (torch.rand(n) < 0.5).to(x.device)
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x


# ---------------------------------------------------------------- model
def build_network(preset, in_shape, classes, width=1.0, conv_norm="instance",
                  dense_norm="layer", ceil_pools=True):
    """Returns (nn.Sequential, [(layer, output shape), ...]); raises ValueError when a pool
    would shrink a side below 1."""
    def scaled(n):
        return max(1, round(n * width))

    c, h, w = in_shape
    layers, shapes = [], []
    for i, spec in enumerate(PRESETS[preset]):
        if spec == "pool":
            if h < 2 or w < 2:
                raise ValueError(f"{preset}: the pool at position {i + 1} of its layer list "
                                 f"would shrink {h}x{w} below 1x1; the input is too small")
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=ceil_pools))
            h, w = ((h + 1) // 2, (w + 1) // 2) if ceil_pools else (h // 2, w // 2)
            shapes.append(("pool", (c, h, w)))
        elif isinstance(spec, int):
            out = scaled(spec)
            norm = {"instance": lambda: nn.InstanceNorm2d(out, affine=True),
                    "batch": lambda: nn.BatchNorm2d(out), "none": nn.Identity}[conv_norm]()
            layers += [nn.Conv2d(c, out, 3, stride=1, padding=1, bias=True), norm,
                       nn.LeakyReLU(NEG_SLOPE)]
            c = out
            shapes.append((f"conv{out}", (c, h, w)))
        else:
            out = scaled(int(spec[len("dense"):]))
            norm = {"layer": lambda: nn.LayerNorm(out), "batch": lambda: nn.BatchNorm1d(out),
                    "none": nn.Identity}[dense_norm]()
            layers += [nn.Flatten(), nn.Linear(c * h * w, out), norm, nn.LeakyReLU(NEG_SLOPE)]
            c, h, w = out, 1, 1
            shapes.append((f"dense{out}", (out,)))
    layers.append(nn.Linear(c * h * w, classes))
    shapes.append(("output", (classes,)))
    return nn.Sequential(*layers), shapes


# ---------------------------------------------------------------- training
def peak_rss_bytes():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg8b", choices=sorted(PRESETS))
    p.add_argument("--width-multiplier", type=float, default=1.0)
    p.add_argument("--conv-norm", default="instance", choices=["instance", "batch", "none"])
    p.add_argument("--dense-norm", default="layer", choices=["layer", "batch", "none"])
    p.add_argument("--floor-pools", action="store_true",
                   help="drop a pool's partial edge window (train --no-ceil-pools)")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--limit", type=int, default=0, help="first N training samples (0: all)")
    p.add_argument("--crop-padding", type=int, default=0)
    p.add_argument("--flip", action="store_true")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batches", type=int, default=0,
                   help="time N training batches after 5 warm-up batches, then exit")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-cosine-to", type=float, default=None,
                   help="anneal the rate to this value along a cosine over --epochs, stepped "
                        "each epoch (train --lr-cosine-to)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    args = p.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    x_train, y_train, x_test, y_test = (t.to(args.device) for t in load_data(args.data_dir))
    if args.limit > 0:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    in_shape = tuple(x_train.shape[1:])
    if args.crop_padding < 0 or args.crop_padding >= min(in_shape[1:]):
        p.error(f"--crop-padding must be in 0..{min(in_shape[1:]) - 1} for "
                f"{in_shape[1]}x{in_shape[2]} images")
    classes = int(max(y_train.max(), y_test.max())) + 1
    try:
        model, shapes = build_network(args.model, in_shape, classes, args.width_multiplier,
                                      args.conv_norm, args.dense_norm, not args.floor_pools)
    except ValueError as e:
        sys.exit(f"error: {e}")
    model.to(args.device)
    print(json.dumps({
        "model": args.model, "width_multiplier": args.width_multiplier,
        "conv_norm": args.conv_norm, "dense_norm": args.dense_norm, "input": in_shape,
        "ceil_pools": not args.floor_pools,
        "parameters": sum(q.numel() for q in model.parameters()),
        "layers": [{"layer": name, "output": shape} for name, shape in shapes],
        "train_samples": x_train.shape[0], "test_samples": x_test.shape[0],
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": args.device}), flush=True)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=args.epochs, eta_min=args.lr_cosine_to)
        if args.lr_cosine_to is not None else None)

    def train_batch(j):
        x = augment(x_train[j], args.crop_padding, args.flip)
        out = model(x)
        loss = F.cross_entropy(out, y_train[j])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return (out.argmax(1) == y_train[j]).sum().item()

    B = args.batch_size
    model.train()
    if args.batches > 0:
        # Cycles through the permutation so a small --limit still yields full batches.
        need = (5 + args.batches) * B
        perm = torch.randperm(x_train.shape[0]).repeat(need // x_train.shape[0] + 1)[:need]
        for k in range(5):
            train_batch(perm[k * B:(k + 1) * B])
        t0 = time.perf_counter()
        for k in range(5, 5 + args.batches):
            train_batch(perm[k * B:(k + 1) * B])
        dt = time.perf_counter() - t0
        print(json.dumps({"batches": args.batches, "batch_size": B, "seconds": round(dt, 3),
                          "samples_per_second": round(args.batches * B / dt, 1),
                          "peak_rss_bytes": peak_rss_bytes()}), flush=True)
        return

    n = x_train.shape[0]
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(n)
        correct = 0
        t0 = time.perf_counter()
        for i in range(0, n, B):
            correct += train_batch(perm[i:i + B])
        dt = time.perf_counter() - t0
        # Train accuracy counts the batches as trained (augmented, weights in flux), which
        # costs no second pass over the training set.
        model.eval()
        test_correct = 0
        with torch.no_grad():
            for i in range(0, x_test.shape[0], 256):
                out = model(x_test[i:i + 256])
                test_correct += (out.argmax(1) == y_test[i:i + 256]).sum().item()
        print(json.dumps({"epoch": epoch, "train_accuracy": round(correct / n, 4),
                          "test_accuracy": round(test_correct / x_test.shape[0], 4),
                          "seconds": round(dt, 2), "samples_per_second": round(n / dt, 1),
                          "peak_rss_bytes": peak_rss_bytes()}), flush=True)
        if schedule is not None:
            schedule.step()


if __name__ == "__main__":
    main()
