"""Measure training speed of the authors' sigprop library (amassivek/signalpropagation)
on Fashion-MNIST, CPU only.

Setup mirrors examples/examples.py + README quick start of the library:
  sigprop.managers.Preset(models.Forward, propagators.Loss, propagators.signals.Loss, build_optimizer)
  loss = sigprop.loss.v9_input_target_max_all (for the signal and every hidden block)
  signal = Sequential(LabelNumberToOnehot(10), ProjectionContextInput(context_module, input_module, (10,), out_shape))
  hidden blocks wrapped in propagators.Loss (one Adam per block), pools in propagators.Fixed,
  flatten in propagators.Forward, output Linear in propagators.Identity trained by an outer
  Adam with cross entropy (its input h is detached by the preceding Loss propagator).
Block layout follows examples.py BlockLinear/BlockConv with --norm instance_norm --nonlin leakyrelu
(instance_norm => LayerNorm in dense blocks, InstanceNorm2d(affine) in conv blocks; biases on).
Context projection follows examples.py signal_modules_lpi: Linear(10, numel, bias=False), LayerNorm, ReLU.

Error Forward-Propagation (--loop-back predict|learn): the library's models.LoopBack (a first
pass without the target, no learning) or models.ForwardLoopBack (a first pass that learns with
the target), with error(output, context) = softmax(output) - onehot(c). The signal then takes
one-hot rows as its context (LabelNumberToOnehot cannot take the error), so the context is
onehot(c) and the output layer's cross entropy still reads the label numbers.

The VGG presets (--model vgg6b|vgg8b|vgg11b) follow examples.py VGGn with its conv blocks as
above and its classifier (--num-layers 1: the preset's dense1024 block, then the output layer),
the pools as SigProp's presets (ceil_mode: a side the pool does not divide keeps its edge), the
data and augmentation of vgg8b_backprop.py (--crop-padding, --flip), and the loss of
examples.sh (--loss top-k:6 is v15_input_target_topk(6)).

Usage (pip install torch numpy; SIGPROP_REFERENCE_LIB=<clone of the library>):
  python3 measure_reference.py --model mlp --epochs 1     # samples/s of the training loop, test accuracy
  python3 measure_reference.py --model cnn --batches 20    # 20 timed batches after 5 warm-up batches
  python3 measure_reference.py --model vgg8b --width-multiplier 0.25 --loss top-k:6 \
      --crop-padding 2 --flip --epochs 10 --lr-cosine-to 0
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

# The authors' library is not part of this repository: clone it (git clone
# https://github.com/amassivek/signalpropagation) and point SIGPROP_REFERENCE_LIB at the clone.
sys.path.insert(0, os.environ.get("SIGPROP_REFERENCE_LIB", os.path.join(os.path.dirname(os.path.abspath(__file__)), "signalpropagation")))
import sigprop  # noqa: E402

import reference_io  # noqa: E402
import vgg8b_backprop  # noqa: E402  (the VGG presets' layer lists, the data and augmentation)

p = argparse.ArgumentParser()
p.add_argument("--model", default="mlp", choices=["mlp", "cnn"] + sorted(vgg8b_backprop.PRESETS))
p.add_argument("--width-multiplier", type=float, default=1.0, help="VGG presets: scales every width")
p.add_argument("--loss", default="max-all", help="max-all (v9) or top-k:K (v15)")
p.add_argument("--crop-padding", type=int, default=0, help="VGG presets: random crops of the padded image")
p.add_argument("--flip", action="store_true", help="VGG presets: random horizontal flips")
p.add_argument("--limit", type=int, default=0, help="first N training samples (0: all)")
p.add_argument("--lr-cosine-to", type=float, default=None,
               help="anneal every optimizer's rate to this value along a cosine over --epochs")
p.add_argument("--batches", type=int, default=0, help="time N training batches after 5 warm-up batches")
p.add_argument("--epochs", type=int, default=0, help="full epochs with per-epoch time and test accuracy")
p.add_argument("--batch-size", type=int, default=128)
p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
p.add_argument("--loop-back", default="none", choices=["none", "predict", "learn"],
               help="Error Forward-Propagation: LoopBack (predict) or ForwardLoopBack (learn)")
args = p.parse_args()
if args.loss != "max-all" and not (args.loss.startswith("top-k:") and args.loss[6:].isdigit()):
    p.error(f"--loss {args.loss}: expected max-all or top-k:K")
if args.model in ("mlp", "cnn") and (args.width_multiplier != 1 or args.crop_padding or args.flip):
    p.error("--width-multiplier, --crop-padding and --flip are for the VGG presets")

torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)

NEG_SLOPE = 0.01  # examples.py: --nonlin leakyrelu (default and examples.sh) -> LeakyReLU(0.01)


# ---------------------------------------------------------------- data
def load(split):
    x = reference_io.read_idx(os.path.join(args.data_dir, f"{split}-images-idx3-ubyte.gz"))
    y = reference_io.read_idx(os.path.join(args.data_dir, f"{split}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
    x = (x - 0.2860) / 0.3530
    return x.contiguous(), torch.from_numpy(y.astype(np.int64))


if args.model in ("mlp", "cnn"):
    x_train, y_train = load("train")
    x_test, y_test = load("t10k")
else:
    x_train, y_train, x_test, y_test = vgg8b_backprop.load_data(args.data_dir)
if args.limit > 0:
    x_train, y_train = x_train[:args.limit], y_train[:args.limit]


# ---------------------------------------------------------------- library-style setup
def build_optimizer(module, lr=None, weight_decay=0.0):
    # examples.py build_optimizer (adam)
    if lr is None:
        lr = args.lr
    params = list(module.parameters())
    if len(params) == 0:
        return None
    return optim.Adam(params, lr=lr, weight_decay=weight_decay, amsgrad=False)


class BlockLinear(nn.Module):  # examples.py BlockLinear, norm=instance_norm -> LayerNorm
    def __init__(self, num_in, num_out):
        super().__init__()
        self.encoder = nn.Linear(num_in, num_out, bias=True)
        self.bn = nn.LayerNorm(num_out)
        self.nonlin = nn.LeakyReLU(negative_slope=NEG_SLOPE, inplace=True)

    def forward(self, x):
        return self.nonlin(self.bn(self.encoder(x)))


class BlockConv(nn.Module):  # examples.py BlockConv act="post", norm=instance_norm
    def __init__(self, ch_in, ch_out):
        super().__init__()
        ch_out = int(ch_out)
        self.encoder = nn.Conv2d(ch_in, ch_out, 3, stride=1, padding=1, bias=True)
        self.bn = nn.InstanceNorm2d(ch_out, track_running_stats=False, affine=True)
        self.nonlin = nn.LeakyReLU(negative_slope=NEG_SLOPE, inplace=True)

    def forward(self, x):
        return self.nonlin(self.bn(self.encoder(x)))


def context_module(input_shape, output_shape):  # examples.py signal_modules_lpi (context part)
    n = int(sigprop.utils.shape_numel(output_shape))
    return nn.Sequential(
        nn.Linear(int(sigprop.utils.shape_numel(input_shape)), n, bias=False),
        nn.LayerNorm(n),
        nn.ReLU(),
    )


def output_error(output, context):  # the error the loop-back models feed to the signal
    return F.softmax(output, 1) - context


def vgg_layers(preset, channels, side, P):
    """The VGG preset after its first conv block (the signal's input part): examples.py
    _make_layers and its classifier, scaled by --width-multiplier."""
    def scaled(n):
        return max(1, round(n * args.width_multiplier))

    layers = []
    for spec in vgg8b_backprop.PRESETS[preset][1:]:
        if spec == "pool":
            layers.append(P(nn.MaxPool2d(2, 2, ceil_mode=True), sigprop.propagators.Fixed))
            side = (side + 1) // 2
        elif isinstance(spec, int):
            layers.append(P(BlockConv(channels, scaled(spec))))
            channels = scaled(spec)
        else:
            width = scaled(int(spec[len("dense"):]))
            layers.append(P(nn.Flatten(), sigprop.propagators.Forward))
            layers.append(P(BlockLinear(channels * side * side, width)))
            channels, side = width, 1
    return layers, channels * side * side


def build_model(kind):
    num_classes = 10
    loss = (sigprop.loss.v9_input_target_max_all if args.loss == "max-all"
            else sigprop.loss.v15_input_target_topk(topk=int(args.loss[6:])))
    model_cls = {
        "none": sigprop.models.Forward,
        "predict": sigprop.models.LoopBack,
        "learn": sigprop.models.ForwardLoopBack,
    }[args.loop_back]
    sp_manager = sigprop.managers.Preset(
        model_cls,
        sigprop.propagators.Loss,
        sigprop.propagators.signals.Loss,
        build_optimizer,
    )
    sp_manager.config_propagator(loss=loss)
    input_shape = (num_classes,)
    if kind == "mlp":
        output_shape = (1024,)
        input_module = nn.Sequential(nn.Flatten(), BlockLinear(28 * 28, 1024))
    elif kind == "cnn":
        output_shape = (32, 28, 28)
        input_module = BlockConv(1, 32)
    else:
        first = max(1, round(vgg8b_backprop.PRESETS[kind][0] * args.width_multiplier))
        output_shape = (first, 28, 28)
        input_module = BlockConv(1, first)
    sp_signal = sigprop.signals.ProjectionContextInput(
        context_module(input_shape, output_shape), input_module, input_shape, output_shape
    )
    if args.loop_back == "none":
        sp_signal = nn.Sequential(sigprop.signals.LabelNumberToOnehot(num_classes), sp_signal)
    sp_manager.set_signal(sp_signal, loss=loss)

    P = sp_manager.add_propagator
    if kind == "mlp":
        layers = [
            P(BlockLinear(1024, 1024)),
            P(BlockLinear(1024, 1024)),
            P(nn.Linear(1024, num_classes, bias=True), sigprop.propagators.Identity),
        ]
    elif kind != "cnn":
        layers, features = vgg_layers(kind, output_shape[0], output_shape[1], P)
        layers.append(P(nn.Linear(features, num_classes, bias=True), sigprop.propagators.Identity))
    else:
        layers = [
            P(BlockConv(32, 64)),
            P(nn.MaxPool2d(kernel_size=2, stride=2), sigprop.propagators.Fixed),
            P(BlockConv(64, 128)),
            P(nn.MaxPool2d(kernel_size=2, stride=2), sigprop.propagators.Fixed),
            P(nn.Flatten(), sigprop.propagators.Forward),
            P(BlockLinear(128 * 7 * 7, 1024)),
            P(nn.Linear(1024, num_classes, bias=True), sigprop.propagators.Identity),
        ]
    if args.loop_back == "none":
        model = sp_manager.set_model(nn.Sequential(*layers))
    else:
        model = sp_manager.set_model(nn.Sequential(*layers), error=output_error)
    # examples.py ModelWrapper/OptimizerWrapper: optimizer over model.parameters(),
    # which for sigprop.models.Model is only the Identity-wrapped output layer.
    out_optimizer = build_optimizer(model)
    return model, out_optimizer


model, out_opt = build_model(args.model)
# Every optimizer of the run: each block's and the signal's (their propagators hold them) and
# the output layer's, so that a learning-rate schedule steps them all.
optimizers = [out_opt] + [m.optimizer for m in list(model.modules()) + list(model.signal.modules())
                          if isinstance(getattr(m, "optimizer", None), optim.Optimizer)]
optimizers = list({id(o): o for o in optimizers}.values())
schedules = ([optim.lr_scheduler.CosineAnnealingLR(o, T_max=args.epochs, eta_min=args.lr_cosine_to)
              for o in optimizers] if args.lr_cosine_to is not None else [])


n_params = sum(p.numel() for p in list(model.signal.parameters()) + [q for m in model.model.modules() if hasattr(m, "module") for q in m.module.parameters()])
print(f"torch {torch.__version__} threads={torch.get_num_threads()} model={args.model} params={n_params} "
      f"optimizers={len(optimizers)} train_samples={x_train.shape[0]}")


def train_batch(x, y):
    # examples.py Runner.train_batch with args.sigprop: output = model((x, y)); CE on output.
    model.train()
    if args.crop_padding or args.flip:
        x = vgg8b_backprop.augment(x, args.crop_padding, args.flip)
    context = y if args.loop_back == "none" else F.one_hot(y, 10).float()
    output = model((x, context))
    loss = F.cross_entropy(output, y)
    out_opt.zero_grad()
    loss.backward()
    out_opt.step()
    return loss


@torch.no_grad()
def test_accuracy():
    model.eval()
    correct = 0
    for i in range(0, x_test.shape[0], 1000):
        out = model((x_test[i:i + 1000], None))
        correct += (out.argmax(1) == y_test[i:i + 1000]).sum().item()
    return correct / x_test.shape[0]


B = args.batch_size
if args.batches > 0:
    perm = torch.randperm(x_train.shape[0])
    idx = [perm[i * B:(i + 1) * B] for i in range(5 + args.batches)]
    batches = [(x_train[j], y_train[j]) for j in idx]
    for x, y in batches[:5]:
        train_batch(x, y)
    t0 = time.perf_counter()
    for x, y in batches[5:]:
        loss = train_batch(x, y)
    dt = time.perf_counter() - t0
    print(f"{args.model}: {args.batches} batches of {B} in {dt:.3f} s -> {args.batches * B / dt:.1f} samples/s "
          f"({1000 * dt / args.batches:.1f} ms/batch), last loss {loss.item():.4f}")

for epoch in range(1, args.epochs + 1):
    perm = torch.randperm(x_train.shape[0])
    n = x_train.shape[0]
    t0 = time.perf_counter()
    for i in range(0, n, B):
        j = perm[i:i + B]
        loss = train_batch(x_train[j], y_train[j])
    dt = time.perf_counter() - t0
    acc = test_accuracy()
    print(f"{args.model} epoch {epoch}: {dt:.1f} s, {n / dt:.1f} samples/s, last loss {loss.item():.4f}, "
          f"test acc (output layer) {100 * acc:.2f}%, peak rss "
          f"{vgg8b_backprop.peak_rss_bytes() / 2**20:.0f} MiB", flush=True)
    for schedule in schedules:
        schedule.step()
