"""snnTorch's tutorial network trained with backpropagation through time, as the baseline for
SigProp's spiking networks (docs/spiking.md, docs/performance.md).

The network and training of snnTorch's tutorial 5 ("Training Spiking Neural Networks with
snnTorch"): 784 -> Linear -> 1,000 Leaky neurons -> Linear -> 10 Leaky neurons, beta 0.95,
threshold 1, reset by subtraction, the image (pixels / 255) as the input current at every
one of T = 25 steps, the arctan surrogate gradient (snnTorch's default), the cross entropy
of the output membrane summed over the steps, Adam lr 5e-4 betas (0.9, 0.999), batch 128 of
shuffled training images, prediction by the output layer's spike count (the first of equal
counts, as torch's max). Data: Fashion-MNIST, all 60,000 training and 10,000 test images.

After each epoch one JSON line: test accuracy (percent), mean training loss, training time of
the epoch (evaluation excluded), samples/s, peak resident memory (MiB, read before the
evaluation so that it is the training's), and the fraction of hidden neurons that never
fired on the epoch's training samples ("dead").

Usage (pip install torch numpy snntorch):
  python3 Benchmarks/reference/snntorch_tutorial.py --epochs 5 --threads 2 [--timesteps 25]
"""
import argparse
import json
import os
import resource
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import snntorch as snn  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import reference_io  # noqa: E402


class Net(nn.Module):
    def __init__(self, hidden, beta, steps):
        super().__init__()
        self.steps = steps
        self.fc1 = nn.Linear(784, hidden)
        self.lif1 = snn.Leaky(beta=beta)
        self.fc2 = nn.Linear(hidden, 10)
        self.lif2 = snn.Leaky(beta=beta)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spikes1, spikes2, membranes2 = [], [], []
        for _ in range(self.steps):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spikes1.append(spk1)
            spikes2.append(spk2)
            membranes2.append(mem2)
        return torch.stack(spikes1), torch.stack(spikes2), torch.stack(membranes2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--timesteps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="training images used")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train, y_train = reference_io.load_split(args.data_dir, "train")
    x_test, y_test = reference_io.load_split(args.data_dir, "t10k")
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    net = Net(1000, 0.95, args.timesteps)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.9, 0.999))
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x_train))
        fired = torch.zeros(1000, dtype=torch.bool)
        start, total = time.perf_counter(), 0.0
        net.train()
        for b in range(0, len(order), 128):
            idx = order[b:b + 128]
            spikes1, _, membranes = net(x_train[idx])
            loss = sum(F.cross_entropy(m, y_train[idx]) for m in membranes)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            fired |= spikes1.detach().sum((0, 1)) > 0
        seconds = time.perf_counter() - start
        peak_training = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        net.eval()
        correct = 0
        with torch.no_grad():
            for b in range(0, len(x_test), 128):
                _, spikes, _ = net(x_test[b:b + 128])
                correct += (spikes.sum(0).argmax(1) == y_test[b:b + 128]).sum().item()
        print(json.dumps({
            "epoch": epoch, "test_accuracy": 100 * correct / len(x_test),
            "train_loss": total / len(x_train), "seconds": seconds,
            "samples_per_second": len(x_train) / seconds,
            "peak_rss_mib": peak_training,
            "dead_fraction": 1 - fired.float().mean().item(), "timesteps": args.timesteps,
            "threads": args.threads, "torch": torch.__version__,
            "snntorch": snn.__version__}), flush=True)


if __name__ == "__main__":
    main()
