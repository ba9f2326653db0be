"""Golden vectors for Error Forward-Propagation on Signal Propagation's blocks, from a plain
PyTorch implementation of the authors' loop-back models (sigprop/models/loop_back.py):

* LoopBack (`first_pass="predict"`): a first pass of the input stream without the target,
  with no learning, gives the logits; e = softmax(logits) - onehot(c).
* ForwardLoopBack (`first_pass="learn"`): the first pass is a Signal Propagation pass with
  the target onehot(c), whose blocks learn; the error is taken of its logits.

The second pass feeds e to the signal block's context part in onehot(c)'s place: the signal
block's loss takes T0 = e, each hidden block's T0 = the previous block's target stream, every
block learns as under Signal Propagation (max-all, no gradient between blocks), and the output
layer learns with cross entropy of the second pass's logits (once per batch in both models:
the training loop's cross entropy reads the model's final output only).

Blocks as the library's examples and SigProp's mlp: Linear + LayerNorm + LeakyReLU(0.01); the
context part Linear(K -> H1, no bias) + LayerNorm + ReLU; output Linear. Each block its own
torch.optim.SGD (lr 0.1, momentum 0.9), so the steps carry no Adam sign noise. Each case runs
3 steps, in float32 (stored) and float64 (for f64_max_abs_diff).

Usage (pip install torch numpy):
  python3 Benchmarks/reference/efp_golden.py
writes Tests/SigPropTests/Fixtures/efp_*.json.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_io  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO_ROOT, "Tests", "SigPropTests", "Fixtures")
STEPS = 3
LR = 0.1
MOMENTUM = 0.9

CASES = [
    dict(name="efp_predict_B6_D12_H8x8_K4", batch=6, features=12, widths=[8, 8], classes=4,
         first_pass="predict", seed=6105),
    dict(name="efp_learn_B5_D10_H7x6_K3", batch=5, features=10, widths=[7, 6], classes=3,
         first_pass="learn", seed=6115),
]


def block(n_in, n_out):
    return nn.Sequential(nn.Linear(n_in, n_out), nn.LayerNorm(n_out), nn.LeakyReLU(0.01))


class Net(nn.Module):
    """Signal block (input part, context part), hidden blocks, output layer."""

    def __init__(self, features, widths, classes):
        super().__init__()
        self.input = block(features, widths[0])
        self.context = nn.Sequential(
            nn.Linear(classes, widths[0], bias=False), nn.LayerNorm(widths[0]), nn.ReLU())
        self.hidden = nn.ModuleList(block(a, b) for a, b in zip(widths, widths[1:]))
        self.output = nn.Linear(widths[-1], classes)

    def optimizers(self):
        groups = [list(self.input.parameters()) + list(self.context.parameters())]
        groups += [list(h.parameters()) for h in self.hidden] + [list(self.output.parameters())]
        return [torch.optim.SGD(g, lr=LR, momentum=MOMENTUM) for g in groups]


def max_all(h, t, t0):
    """SIGPROP.md's local loss: soft-target cross entropy of Y = H T^T against the rows' max
    of YY = T0 T0^T; also the smallest gap between a row's max and its next entry, relative
    to the max (SigProp counts entries within 2^-16 of it as ties)."""
    y = h @ t.t()
    yy = t0 @ t0.t()
    top = yy.max(1, keepdim=True).values
    mask = (yy == top).to(h.dtype)
    second = yy.masked_fill(mask.bool(), -float("inf")).max(1, keepdim=True).values
    gap = ((top - second) / top.abs().clamp(min=1.0)).min().item()
    return -(mask * F.log_softmax(y, 1)).sum() / h.shape[0], gap


def step(optimizer, loss):
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def sigprop_pass(net, optimizers, x, context, labels=None):
    """The second (or a learning first) pass: every block learns from its local loss with the
    weights it has when the pass reaches it. Returns the losses, the logits and the gap."""
    losses, gaps = [], []
    h, t = net.input(x), net.context(context)
    loss, gap = max_all(h, t, context)
    step(optimizers[0], loss)
    losses.append(loss.detach())
    gaps.append(gap)
    for block_, optimizer in zip(net.hidden, optimizers[1:-1]):
        h0, t0 = h.detach(), t.detach()
        h, t = block_(h0), block_(t0)
        loss, gap = max_all(h, t, t0)
        step(optimizer, loss)
        losses.append(loss.detach())
        gaps.append(gap)
    logits = net.output(h.detach())
    if labels is not None:
        loss = F.cross_entropy(logits, labels)
        step(optimizers[-1], loss)
        losses.append(loss.detach())
    return losses, logits.detach(), min(gaps)


def predict(net, x):
    with torch.no_grad():
        h = net.input(x)
        for block_ in net.hidden:
            h = block_(h)
        return net.output(h)


def make_inputs(case):
    g = torch.Generator().manual_seed(case["seed"])
    torch.manual_seed(case["seed"])
    net = Net(case["features"], case["widths"], case["classes"])
    inputs = {
        "x": torch.randn(STEPS, case["batch"], case["features"], generator=g),
        "labels": torch.randint(0, case["classes"], (STEPS, case["batch"]), generator=g),
    }
    for name, p in net.named_parameters():
        inputs["init." + name] = p.detach().clone()
    return inputs


def run_case(case, inputs, dtype):
    net = Net(case["features"], case["widths"], case["classes"]).to(dtype)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(inputs["init." + name].to(dtype))
    optimizers = net.optimizers()
    out, gaps = {}, []
    for s in range(STEPS):
        x, labels = inputs["x"][s].to(dtype), inputs["labels"][s]
        onehot = F.one_hot(labels, case["classes"]).to(dtype)
        if case["first_pass"] == "learn":
            losses, logits, gap = sigprop_pass(net, optimizers, x, onehot)
            out[f"step{s}.first.losses"] = torch.stack(losses)
            gaps.append(gap)
        else:
            logits = predict(net, x)
        error = F.softmax(logits, 1) - onehot
        out[f"step{s}.error"] = error
        losses, _, gap = sigprop_pass(net, optimizers, x, error, labels)
        out[f"step{s}.losses"] = torch.stack(losses)
        gaps.append(gap)
    for name, p in net.named_parameters():
        out["final." + name] = p.detach().clone()
    params = dict(net.named_parameters())
    for optimizer in optimizers:
        for p in optimizer.param_groups[0]["params"]:
            name = next(n for n, q in params.items() if q is p)
            out[f"final.{name}.momentum_buffer"] = optimizer.state[p]["momentum_buffer"].clone()
    logits = predict(net, inputs["x"][-1].to(dtype))
    out["predictions"] = logits.argmax(1)
    top = logits.topk(2, dim=1).values
    margin = ((top[:, 0] - top[:, 1]) / top[:, 0].abs().clamp(min=1.0)).min().item()
    return out, min(gaps), margin


def main():
    torch.set_num_threads(1)
    os.makedirs(FIXTURES, exist_ok=True)
    for case in CASES:
        inputs = make_inputs(case)
        out32, gap, margin = run_case(case, inputs, torch.float32)
        out64, _, _ = run_case(case, inputs, torch.float64)
        assert torch.equal(out32["predictions"], out64["predictions"])
        # A target-mask row whose max is within rounding of another entry could pick a
        # different mask on another device: refuse such a case.
        assert gap > 1e-4 and margin > 1e-4, (case["name"], gap, margin)
        config = {
            "features": case["features"], "widths": case["widths"],
            "classes": case["classes"], "batch": case["batch"], "steps": STEPS,
            "first_pass": case["first_pass"],
            "blocks": "Linear + LayerNorm(eps 1e-5) + LeakyReLU(0.01); context Linear(K, H1, "
                      "no bias) + LayerNorm + ReLU; output Linear",
            "loss": "max-all (SIGPROP.md), T0 = e for the signal block in the second pass",
            "error": "e = softmax(logits) - onehot(labels), logits of the first pass",
            "sgd": {"lr": LR, "momentum": MOMENTUM, "weight_decay": 0.0},
        }
        description = (
            f"Error Forward-Propagation ({case['first_pass']} first pass) on a Signal "
            f"Propagation network {case['features']} -> {' -> '.join(map(str, case['widths']))}"
            f" -> {case['classes']}, B = {case['batch']}: {STEPS} steps. step<s>.error is e "
            "from the first pass's logits; step<s>.losses the second pass's block losses then "
            "the output layer's cross entropy (step<s>.first.losses: the learning first "
            "pass's block losses). final.* the parameters and SGD momentum buffers after the "
            "last step; predictions the output layer's argmax on x[S-1].")
        names = [name for name, _ in Net(case["features"], case["widths"],
                                         case["classes"]).named_parameters()]
        path, diffs = reference_io.write_golden(
            FIXTURES, case, "efp", description, config, inputs, out32, out64, names,
            "Benchmarks/reference/efp_golden.py")
        print(f"{path}: {len(out32)} outputs, max f64 diff {max(diffs.values()):.3g}, "
              f"mask gap {gap:.3g}, prediction margin {margin:.3g}")


if __name__ == "__main__":
    main()
