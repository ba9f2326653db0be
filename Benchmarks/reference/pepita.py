"""Reference trainer for the PEPITA rule (Dellaferrera & Kreiman, ICML 2022, "Error-driven
Input Modulation: Solving the Credit Assignment Problem without a Backward Pass") on
Fashion-MNIST, CPU only, with numpy and torch. No autograd: the updates are built from two
forward passes.

The rule, for a dense network x -> h_1 -> ... -> h_L (h_L the output layer, K classes):
  * clean pass: h_l = relu(W_l h_{l-1}) for the hidden layers, logits = W_L h_{L-1}; no
    biases; e = softmax(logits) - onehot(target) (the error is taken after the softmax);
  * modulated pass: x_mod = x + F e, F a fixed random [D0, K] matrix, uniform in
    +-0.05 * sqrt(6 / D0); h_l^mod = relu(W_l h_{l-1}^mod) with the same weights;
  * updates: dW_1 = (h_1 - h_1^mod) x_mod^T, dW_l = (h_l - h_l^mod) (h_{l-1}^mod)^T for
    1 < l < L, dW_L = e (h_{L-1}^mod)^T (the paper's Algorithm 1, with the clean pass's e;
    --last-layer-error modulated takes softmax(logits^mod) - onehot instead, as the
    authors' code does), each averaged over the batch;
  * torch.optim.SGD with p.grad = dW, so W -= lr * (momentum buffer of dW + lambda W);
    --weight-decay is the lambda of Srinivasan et al. (ICLR 2024), 0 (off) by default;
  * --mirror: their weight mirroring. F = -(B_1 ... B_L), one factor B_l [in_l, out_l] per
    layer, normal with deviation (sqrt(2 / D0) * scale / sqrt(prod of hidden widths))^(1/L).
    Before each modulated pass the factors are rescaled by (sigma / std(P))^(1/L), P their
    product and sigma = scale * sqrt(2 / D0) (the fixed F's deviation), so F = -(sigma /
    std(P)) P. After each batch's update every layer mirrors: xi = noise * randn(B, in_l),
    minus its mean; y = the layer on xi (ReLU and a fresh dropout mask; the output layer's
    softmax); B_l = (1 - rate * decay) B_l + rate * xi^T y / B (the authors' SGD with weight
    decay on the factors). In the first --premirror epochs only the factors learn; after
    them the factors mirror in epochs whose number is a multiple of --mirror-every;
  * dropout on every hidden layer with one mask per batch shared by both passes (drop
    probability 0.1, kept units scaled by 1 / 0.9); no dropout at test time;
  * prediction: argmax of the clean pass's logits.

Settings of the authors' notebook for the 1 x 1024 network (lr 0.01, momentum 0.9, batch 64,
lr x0.1 before epochs 61 and 91, 100 epochs, He-uniform weights U(+-sqrt(6 / fan_in)),
keep rate 0.9, pixels / 255 with no mean/std normalisation, all 60,000 training images in
shuffled batches with the last batch partial, 10,000 test images).

After each epoch one JSON line reports the test accuracy (percent), the mean cross entropy
of the clean pass over the training batches (with dropout), the training time of the epoch
(evaluation excluded), samples/s and peak RSS.

Usage (pip install torch numpy):
  python3 Benchmarks/reference/pepita.py --epochs 100 --threads 2
"""
import argparse
import json
import math
import os
import resource
import time

# Idle OpenMP workers sleep instead of spinning: on a machine whose cores are shared with
# other jobs, spinning workers lose their time slices and make 2-thread steps much slower.
# An OMP_WAIT_POLICY set by the caller wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import reference_io  # noqa: E402

FEEDBACK_SCALE = 0.05


def he_uniform_(weight, generator=None):
    limit = math.sqrt(6.0 / weight.shape[1])
    with torch.no_grad():
        weight.uniform_(-limit, limit, generator=generator)
    return weight


def feedback_matrix(in_features, num_classes, scale=FEEDBACK_SCALE, generator=None):
    """F [D0, K], uniform in +-scale * sqrt(6 / D0): the He-uniform range of the first layer,
    shrunk so that the modulation is a small perturbation of the input."""
    limit = math.sqrt(6.0 / in_features)
    return (torch.rand(in_features, num_classes, generator=generator) * 2 - 1) * limit * scale


def mirror_factors(widths, scale=FEEDBACK_SCALE, generator=None):
    """Weight mirroring's factors of F, B_l [in_l, out_l], normal so that their product has
    the fixed F's deviation."""
    hidden = math.prod(widths[1:-1])
    layers = len(widths) - 1
    deviation = (scale * math.sqrt(2.0 / widths[0]) / math.sqrt(hidden)) ** (1.0 / layers)
    return [torch.randn(widths[i], widths[i + 1], generator=generator) * deviation
            for i in range(layers)]


def compose_feedback(factors, scale=FEEDBACK_SCALE):
    """F for the next modulated pass: rescales the factors in place so that their product P
    has deviation sigma = scale * sqrt(2 / D0), and returns -(sigma / std(P)) P."""
    product = factors[-1]
    for factor in reversed(factors[:-1]):
        product = factor @ product
    sigma = scale * math.sqrt(2.0 / factors[0].shape[0])
    ratio = sigma / product.std()
    for factor in factors:
        factor.mul_(ratio ** (1.0 / len(factors)))
    return -ratio * product


class PepitaNet(nn.Module):
    def __init__(self, widths, generator=None):
        super().__init__()
        self.widths = list(widths)
        self.layers = nn.ModuleList(
            nn.Linear(widths[i], widths[i + 1], bias=False) for i in range(len(widths) - 1))
        for layer in self.layers:
            he_uniform_(layer.weight, generator)
        # The updates are set by hand: autograd would only record graphs that are never used.
        self.requires_grad_(False)

    def forward_pass(self, x, masks=None):
        """Returns (hidden activations after relu and dropout, logits)."""
        hidden = []
        h = x
        for idx, layer in enumerate(self.layers[:-1]):
            h = torch.relu(layer(h))
            if masks is not None:
                h = h * masks[idx]
            hidden.append(h)
        return hidden, self.layers[-1](h)

    def dropout_masks(self, batch, drop, generator, dtype=torch.float32):
        """One mask per hidden layer, kept units scaled by 1 / keep: the same masks go into
        both passes, so that h - h^mod compares the same units."""
        if drop <= 0:
            return None
        keep = 1.0 - drop
        return [torch.bernoulli(torch.full((batch, w), keep, dtype=dtype), generator=generator)
                / keep for w in self.widths[1:-1]]

    def deltas(self, x, labels, feedback, masks=None, last_layer_error="clean"):
        """The PEPITA updates of one batch, before the optimizer (W -= lr * dW).

        Returns (dW per layer, e [B, K], cross entropy of the clean pass)."""
        batch = x.shape[0]
        hidden, logits = self.forward_pass(x, masks)
        onehot = F.one_hot(labels, logits.shape[1]).to(x.dtype)
        error = torch.softmax(logits, dim=1) - onehot
        x_mod = x + error @ feedback.t()
        hidden_mod, logits_mod = self.forward_pass(x_mod, masks)
        inputs_mod = [x_mod] + hidden_mod
        deltas = []
        for l in range(len(self.layers) - 1):
            deltas.append((hidden[l] - hidden_mod[l]).t() @ inputs_mod[l] / batch)
        if last_layer_error == "modulated":
            top = torch.softmax(logits_mod, dim=1) - onehot
        else:
            top = error
        deltas.append(top.t() @ inputs_mod[-1] / batch)
        return deltas, error, F.cross_entropy(logits, labels)

    def mirror(self, factors, noises, rate, decay, masks=None):
        """One weight-mirroring step of every factor after the weights' update: noises[l] is
        layer l's centred noise [B, in_l], masks[l] a fresh dropout mask of hidden layer l."""
        batch = noises[0].shape[0]
        last = len(self.layers) - 1
        for l, (layer, factor, xi) in enumerate(zip(self.layers, factors, noises)):
            if l == last:
                y = torch.softmax(layer(xi), dim=1)
            else:
                y = torch.relu(layer(xi))
                if masks is not None:
                    y = y * masks[l]
            factor.mul_(1.0 - rate * decay).add_(xi.t() @ y, alpha=rate / batch)

    def mirror_noise(self, batch, deviation, generator, dtype=torch.float32):
        """Each layer's noise for a mirroring step: normal, minus its mean."""
        noises = []
        for width in self.widths[:-1]:
            xi = torch.randn(batch, width, generator=generator, dtype=dtype) * deviation
            noises.append(xi - xi.mean())
        return noises

    def make_optimizer(self, lr, momentum, weight_decay):
        return torch.optim.SGD(self.parameters(), lr=lr, momentum=momentum,
                               weight_decay=weight_decay)

    def step(self, optimizer, deltas):
        for layer, delta in zip(self.layers, deltas):
            layer.weight.grad = delta
        optimizer.step()

    @torch.no_grad()
    def predict(self, x):
        return self.forward_pass(x)[1].argmax(dim=1)


def evaluate(model, x, y, batch_size=1000):
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model.predict(x[i:i + batch_size]) == y[i:i + batch_size]).sum().item()
    return 100.0 * correct / len(x)


def step_lr(base_lr, epoch, milestones):
    """x0.1 for every milestone already passed; epoch is 1-based, so milestone 60 lowers the
    rate from the 61st epoch on, as the notebook's 0-based `if epoch in [60, 90]` does."""
    return base_lr * 0.1 ** sum(1 for m in milestones if epoch > m)


def parse_ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", default="1024", help="hidden widths, comma separated")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--milestones", default="60,90", help="epochs after which lr *= 0.1")
    p.add_argument("--dropout", type=float, default=0.1, help="drop probability")
    p.add_argument("--feedback-scale", type=float, default=FEEDBACK_SCALE)
    p.add_argument("--last-layer-error", choices=["clean", "modulated"], default="clean")
    p.add_argument("--mirror", action="store_true", help="weight mirroring of F's factors")
    p.add_argument("--mirror-rate", type=float, default=0.01)
    p.add_argument("--mirror-decay", type=float, default=1e-4)
    p.add_argument("--mirror-noise", type=float, default=0.1)
    p.add_argument("--premirror", type=int, default=0,
                   help="epochs at the start in which only the factors learn")
    p.add_argument("--mirror-every", type=int, default=1,
                   help="after those, mirror in epochs whose number is a multiple of this")
    p.add_argument("--limit", type=int, default=0, help="train on the first N images only")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    x_train, y_train = reference_io.load_split(args.data_dir, "train")
    if args.limit > 0:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_test, y_test = reference_io.load_split(args.data_dir, "t10k")
    num_classes = 10
    milestones = parse_ints(args.milestones)

    widths = [x_train.shape[1]] + parse_ints(args.hidden) + [num_classes]
    model = PepitaNet(widths, generator)
    feedback = feedback_matrix(widths[0], num_classes, args.feedback_scale, generator)
    factors = mirror_factors(widths, args.feedback_scale, generator) if args.mirror else None
    optimizer = model.make_optimizer(args.lr, args.momentum, args.weight_decay)
    n = len(x_train)
    for epoch in range(1, args.epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = step_lr(args.lr, epoch, milestones)
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        loss_sum, batches = 0.0, 0
        for b in range(0, n, args.batch_size):
            idx = order[b:b + args.batch_size]
            masks = model.dropout_masks(len(idx), args.dropout, generator)
            if factors is not None:
                feedback = compose_feedback(factors, args.feedback_scale)
            deltas, _, loss = model.deltas(x_train[idx], y_train[idx], feedback, masks,
                                           args.last_layer_error)
            if factors is None or epoch > args.premirror:
                model.step(optimizer, deltas)
            if factors is not None and (epoch <= args.premirror
                                        or epoch % args.mirror_every == 0):
                model.mirror(factors, model.mirror_noise(len(idx), args.mirror_noise, generator),
                             args.mirror_rate, args.mirror_decay,
                             model.dropout_masks(len(idx), args.dropout, generator))
            loss_sum += loss.item()
            batches += 1
        seconds = time.perf_counter() - start
        accuracy = evaluate(model, x_test, y_test)
        print(json.dumps({
            "epoch": epoch,
            "test_accuracy": round(accuracy, 2),
            "train_loss": round(loss_sum / batches, 6),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 3),
            "samples_per_second": round(n / seconds, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
