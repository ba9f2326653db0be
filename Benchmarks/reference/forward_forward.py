"""Reference trainer for the supervised Forward-Forward rule (Hinton 2022, section 3.3) on
Fashion-MNIST, CPU only, with numpy and torch.

The settings follow the best-known PyTorch reimplementation of the supervised variant:
  * network 784 -> 1000 -> 1000 -> 1000 (--hidden, --layers), K = 10 classes;
  * inputs are pixel / 255 in [0, 1], no mean/std normalisation; the first K input entries
    carry the label: onehot(true label) for positives, onehot(a uniformly drawn wrong label,
    redrawn per sample each epoch) for negatives, 1/K everywhere for the neutral sample;
  * every layer's input is RMS-normalised per row, z / (sqrt(mean(z^2)) + 1e-8);
  * a = z W^T + b, h = relu(a) with a straight-through gradient (dh/da = 1);
  * FF loss per layer: BCEWithLogits(sum_j h_j^2 - D_l, 1 for positives, 0 for negatives),
    mean over the 2B rows; peer normalisation weight 0.03, running-mean momentum 0.9
    (running means start at 0.5, updated from the positive rows);
  * the next layer sees RMS-normalise(h.detach()): no gradient crosses layers;
  * linear readout: a bias-free, zero-initialised Linear on the RMS-normalised h of layers
    2..L of the neutral sample, cross entropy; goodness readout: argmax over the K labels
    of the sum of h^2 over layers 2..L;
  * SGD momentum 0.9: layers lr 1e-3, weight decay 3e-4; classifier lr 1e-2, weight decay
    3e-3; linear cooldown of both rates over the second half of the epochs;
  * weights ~ Normal(0, 1/sqrt(out_features)), biases 0; batch 100, drop_last, shuffled;
    training on the first 50,000 training images, testing on the 10,000 test images.
  * --negatives hard: each batch's negative label is instead the sample's wrong label of
    highest total goodness over layers 2..L under the current weights (SigProp's
    --ff-negatives hard).

After each epoch one JSON line reports the test accuracies of both readouts (percent), the
mean losses, the training time of the epoch (evaluation excluded), samples/s and peak RSS.

Usage (pip install torch numpy):
  python3 Benchmarks/reference/forward_forward.py --epochs 25 --threads 2
"""
import argparse
import json
import math
import os
import resource
import time

# Idle OpenMP workers sleep instead of spinning: on a machine whose cores are shared with
# other jobs, spinning workers lose their time slices and make 2-thread steps about 10x
# slower. An OMP_WAIT_POLICY set by the caller wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import reference_io  # noqa: E402

RMS_EPS = 1e-8
PEER_WEIGHT = 0.03
PEER_MOMENTUM = 0.9
LAYER_SGD = {"lr": 1e-3, "momentum": 0.9, "weight_decay": 3e-4}
CLASSIFIER_SGD = {"lr": 1e-2, "momentum": 0.9, "weight_decay": 3e-3}


class StraightThroughReLU(torch.autograd.Function):
    """relu in the forward pass; the backward pass passes the gradient through unchanged,
    so units that are off still receive a learning signal."""

    @staticmethod
    def forward(ctx, a):
        return a.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad


def rms_normalise(z):
    return z / (torch.sqrt(torch.mean(z * z, dim=-1, keepdim=True)) + RMS_EPS)


def embed_labels(x, labels, num_classes):
    """Rows of x with the first K entries replaced by onehot(labels)."""
    out = x.clone()
    out[:, :num_classes] = F.one_hot(labels, num_classes).to(x.dtype)
    return out


def embed_neutral(x, num_classes):
    out = x.clone()
    out[:, :num_classes] = 1.0 / num_classes
    return out


class ForwardForwardNet(nn.Module):
    def __init__(self, widths, num_classes):
        super().__init__()
        self.widths = list(widths)
        self.num_classes = num_classes
        self.layers = nn.ModuleList(
            nn.Linear(widths[i], widths[i + 1]) for i in range(len(widths) - 1))
        self.classifier = nn.Linear(sum(widths[2:]), num_classes, bias=False)
        # Running means are state, not parameters: they are carried from batch to batch.
        self.running_means = [torch.full((w,), 0.5) for w in widths[1:]]
        for layer in self.layers:
            nn.init.normal_(layer.weight, mean=0.0, std=1.0 / math.sqrt(layer.out_features))
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.classifier.weight)

    def to_dtype(self, dtype):
        self.to(dtype)
        self.running_means = [rm.to(dtype) for rm in self.running_means]
        return self

    def make_optimizer(self):
        layer_params = [p for layer in self.layers for p in layer.parameters()]
        return torch.optim.SGD([
            dict(params=layer_params, **LAYER_SGD),
            dict(params=list(self.classifier.parameters()), **CLASSIFIER_SGD),
        ])

    def losses(self, x, labels, negative_labels):
        """Forward pass of one training batch. Positives and negatives go through each layer
        as one [2B] batch with autograd; the neutral rows go through the same pre-step
        weights without autograd, so the backward pass does no work for them.

        Returns (total loss, dict of per-layer detached statistics)."""
        k = self.num_classes
        batch = x.shape[0]
        z = torch.cat([embed_labels(x, labels, k), embed_labels(x, negative_labels, k)])
        target = torch.cat([torch.ones(batch), torch.zeros(batch)]).to(x.dtype)
        neutral = rms_normalise(embed_neutral(x, k))
        z = rms_normalise(z)
        total = x.new_zeros(())
        ff_losses, peer_losses, goodnesses, features = [], [], [], []
        for idx, layer in enumerate(self.layers):
            h = StraightThroughReLU.apply(layer(z))
            goodness = torch.sum(h * h, dim=1)
            ff_loss = F.binary_cross_entropy_with_logits(goodness - h.shape[1], target)
            # The batch mean carries gradient into h; the old running mean does not.
            rm = (self.running_means[idx].detach() * PEER_MOMENTUM
                  + torch.mean(h[:batch], dim=0) * (1 - PEER_MOMENTUM))
            peer_loss = torch.mean((torch.mean(rm) - rm) ** 2)
            self.running_means[idx] = rm.detach()
            total = total + ff_loss + PEER_WEIGHT * peer_loss
            ff_losses.append(ff_loss.detach())
            peer_losses.append(peer_loss.detach())
            goodnesses.append(goodness.detach())
            z = rms_normalise(h.detach())
            with torch.no_grad():
                neutral = rms_normalise(torch.relu(layer(neutral)))
                if idx >= 1:
                    features.append(neutral)
        logits = self.classifier(torch.cat(features, dim=1))
        classifier_loss = F.cross_entropy(logits, labels)
        total = total + classifier_loss
        return total, {"ff_losses": ff_losses, "peer_losses": peer_losses,
                       "goodness": goodnesses, "classifier_loss": classifier_loss.detach()}

    @torch.no_grad()
    def goodness_scores(self, x):
        """[K, N]: the sum of h^2 over layers 2..L with label k embedded; the K candidate
        labels go through the layers as one [K*N] batch."""
        k = self.num_classes
        n = x.shape[0]
        candidates = torch.arange(k).repeat_interleave(n)
        z = rms_normalise(embed_labels(x.repeat(k, 1), candidates, k))
        score = x.new_zeros(k * n)
        for idx, layer in enumerate(self.layers):
            h = torch.relu(layer(z))
            if idx >= 1:
                score += torch.sum(h * h, dim=1)
            z = rms_normalise(h)
        return score.view(k, n)

    def predict_goodness(self, x):
        return self.goodness_scores(x).argmax(dim=0)

    def hardest_wrong_labels(self, x, labels):
        """The wrong label of highest total goodness."""
        scores = self.goodness_scores(x)
        scores[labels, torch.arange(x.shape[0])] = float("-inf")
        return scores.argmax(dim=0)

    @torch.no_grad()
    def predict_linear(self, x):
        z = rms_normalise(embed_neutral(x, self.num_classes))
        features = []
        for idx, layer in enumerate(self.layers):
            z = rms_normalise(torch.relu(layer(z)))
            if idx >= 1:
                features.append(z)
        return self.classifier(torch.cat(features, dim=1)).argmax(dim=1)


def negative_labels_for(labels, num_classes, generator):
    """A wrong label uniformly among the K-1 others: label + offset in 1..K-1, mod K."""
    offset = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + offset) % num_classes


def evaluate(model, x, y, batch_size=1000):
    good = lin = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        good += (model.predict_goodness(xb) == yb).sum().item()
        lin += (model.predict_linear(xb) == yb).sum().item()
    return 100.0 * good / len(x), 100.0 * lin / len(x)


def cooldown_lr(base_lr, epoch, epochs):
    """Constant for the first half, then linear decay; epoch is 0-based, as the common
    reimplementation counts it (its last epoch runs at 4 / epochs of the rate)."""
    if epoch > epochs // 2:
        return base_lr * 2 * (1 + epochs - epoch) / epochs
    return base_lr


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--hidden", type=int, default=1000)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--train-count", type=int, default=50000)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--negatives", choices=["random", "hard"], default="random")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    x_train, y_train = reference_io.load_split(args.data_dir, "train")
    # The training images left out (50,000-59,999 by default): what the common
    # reimplementation scores by default, beside the test set.
    x_held, y_held = x_train[args.train_count:], y_train[args.train_count:]
    x_train, y_train = x_train[:args.train_count], y_train[:args.train_count]
    x_test, y_test = reference_io.load_split(args.data_dir, "t10k")
    num_classes = 10

    model = ForwardForwardNet([x_train.shape[1]] + [args.hidden] * args.layers, num_classes)
    optimizer = model.make_optimizer()
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    batches = len(x_train) // args.batch_size
    for epoch in range(1, args.epochs + 1):
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = cooldown_lr(base, epoch - 1, args.epochs)
        start = time.perf_counter()
        order = torch.randperm(len(x_train), generator=generator)
        negatives = negative_labels_for(y_train, num_classes, generator)
        ff_sums = torch.zeros(args.layers)
        classifier_sum = 0.0
        for b in range(batches):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            wrong = negatives[idx]
            if args.negatives == "hard":
                wrong = model.hardest_wrong_labels(x_train[idx], y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss, stats = model.losses(x_train[idx], y_train[idx], wrong)
            loss.backward()
            optimizer.step()
            ff_sums += torch.stack(stats["ff_losses"])
            classifier_sum += stats["classifier_loss"].item()
        seconds = time.perf_counter() - start
        goodness_acc, linear_acc = evaluate(model, x_test, y_test)
        held = {}
        if epoch == args.epochs and len(x_held) > 0:
            held_goodness, held_linear = evaluate(model, x_held, y_held)
            held = {"held_out_goodness_accuracy": round(held_goodness, 2),
                    "held_out_linear_accuracy": round(held_linear, 2)}
        print(json.dumps({
            "epoch": epoch,
            "goodness_accuracy": round(goodness_acc, 2),
            "linear_accuracy": round(linear_acc, 2),
            **held,
            "ff_losses": [round(v / batches, 6) for v in ff_sums.tolist()],
            "classifier_loss": round(classifier_sum / batches, 6),
            "seconds": round(seconds, 3),
            "samples_per_second": round(batches * args.batch_size / seconds, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
