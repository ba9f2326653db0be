"""Golden vectors for the supervised Forward-Forward rule, produced by the reference trainer
in forward_forward.py (the same ForwardForwardNet.losses and torch.optim.SGD as training).

Each case runs S = 3 training steps, one batch per step, from a fixed random state: fixed
learning rates (no cooldown), SGD momentum 0.9, the weight decays of training, and a
non-zero classifier init so that the classifier gradient is exercised. The case is run
twice, in float32 (stored) and in float64 (for f64_max_abs_diff).

Usage (pip install torch numpy):
  python3 Benchmarks/reference/forward_forward_golden.py
writes Tests/SigPropTests/Fixtures/forward_forward_*.json.
"""
import math
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forward_forward as ff  # noqa: E402
import reference_io  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO_ROOT, "Tests", "SigPropTests", "Fixtures")
STEPS = 3

CASES = [
    dict(name="forward_forward_B6_D12_H8_K4", batch=6, widths=[12, 8, 8, 8], classes=4,
         seed=4101),
    dict(name="forward_forward_B5_D10_H7x6_K3", batch=5, widths=[10, 7, 6], classes=3,
         seed=4111),
]


def make_inputs(case):
    """Inputs and initial state, drawn in float32 from the case's seed."""
    g = torch.Generator().manual_seed(case["seed"])
    b, widths, k = case["batch"], case["widths"], case["classes"]
    x = torch.rand(STEPS, b, widths[0], generator=g)
    labels = torch.randint(0, k, (STEPS, b), generator=g)
    negative_labels = (labels + torch.randint(1, k, (STEPS, b), generator=g)) % k
    inputs = {"x": x, "labels": labels, "negative_labels": negative_labels}
    for l in range(len(widths) - 1):
        std = 1.0 / math.sqrt(widths[l + 1])
        inputs[f"init.layers.{l}.weight"] = torch.randn(
            widths[l + 1], widths[l], generator=g) * std
        inputs[f"init.layers.{l}.bias"] = torch.zeros(widths[l + 1])
    inputs["init.classifier.weight"] = (
        torch.rand(k, sum(widths[2:]), generator=g) * 0.2 - 0.1)
    for l in range(len(widths) - 1):
        inputs[f"init.layers.{l}.running_mean"] = torch.full((widths[l + 1],), 0.5)
    return inputs


def run_case(case, inputs, dtype):
    """S training steps from inputs, in dtype; returns name -> tensor."""
    widths, k = case["widths"], case["classes"]
    model = ff.ForwardForwardNet(widths, k).to_dtype(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(inputs["init." + name].to(dtype))
    model.running_means = [inputs[f"init.layers.{l}.running_mean"].to(dtype)
                           for l in range(len(widths) - 1)]
    optimizer = model.make_optimizer()
    out = {}
    for s in range(STEPS):
        x = inputs["x"][s].to(dtype)
        optimizer.zero_grad(set_to_none=True)
        loss, stats = model.losses(x, inputs["labels"][s], inputs["negative_labels"][s])
        loss.backward()
        for l in range(len(widths) - 1):
            out[f"step{s}.layers.{l}.ff_loss"] = stats["ff_losses"][l]
            out[f"step{s}.layers.{l}.peer_loss"] = stats["peer_losses"][l]
            out[f"step{s}.layers.{l}.goodness"] = stats["goodness"][l]
        out[f"step{s}.classifier_loss"] = stats["classifier_loss"]
        if s == 0:
            # p.grad before the step: SGD adds the weight decay to a copy, not to p.grad.
            for name, p in model.named_parameters():
                out[f"step0.{name}_grad"] = p.grad.detach().clone()
        optimizer.step()
    for name, p in model.named_parameters():
        out[f"final.{name}"] = p.detach().clone()
    for l, rm in enumerate(model.running_means):
        out[f"final.layers.{l}.running_mean"] = rm.clone()
    for name, p in model.named_parameters():
        out[f"final.{name}.momentum_buffer"] = optimizer.state[p]["momentum_buffer"].clone()
    last_x = inputs["x"][-1].to(dtype)
    out["predictions.goodness"] = model.predict_goodness(last_x)
    out["predictions.linear"] = model.predict_linear(last_x)
    return out, readout_margins(model, last_x)


@torch.no_grad()
def readout_margins(model, x):
    """Smallest gap between the best and the second-best score of each readout, relative to
    the score's scale: a prediction is only a fair test if rounding cannot flip it."""
    k, n = model.num_classes, x.shape[0]
    candidates = torch.arange(k).repeat_interleave(n)
    z = ff.rms_normalise(ff.embed_labels(x.repeat(k, 1), candidates, k))
    score = x.new_zeros(k * n)
    for idx, layer in enumerate(model.layers):
        h = torch.relu(layer(z))
        if idx >= 1:
            score += torch.sum(h * h, dim=1)
        z = ff.rms_normalise(h)
    z = ff.rms_normalise(ff.embed_neutral(x, k))
    features = []
    for idx, layer in enumerate(model.layers):
        z = ff.rms_normalise(torch.relu(layer(z)))
        if idx >= 1:
            features.append(z)
    logits = model.classifier(torch.cat(features, dim=1))

    def gap(scores):
        top = scores.topk(2, dim=1).values
        return ((top[:, 0] - top[:, 1]) / top[:, 0].abs().clamp(min=1.0)).min().item()
    return {"goodness": gap(score.view(k, n).t()), "linear": gap(logits)}


def config_for(case):
    widths, k = case["widths"], case["classes"]
    return {
        "widths": widths,
        "num_classes": k,
        "batch": case["batch"],
        "steps": STEPS,
        "thresholds": widths[1:],
        "activation": "ReLU forward, straight-through backward (dh/da = 1)",
        "rms_norm": "z / (sqrt(mean(z^2 over the row)) + 1e-8) before every layer",
        "label_embedding": "first K input entries := onehot(label) (positive), "
                           "onehot(negative_label) (negative), 1/K each (neutral)",
        "ff_loss": "BCEWithLogits(sum_j h_j^2 - D_l, [1]*B + [0]*B), mean over 2B rows",
        "peer_normalisation": {"weight": ff.PEER_WEIGHT, "momentum": ff.PEER_MOMENTUM,
                               "running_mean_init": 0.5},
        "classifier": "Linear(sum(widths[2:]) -> K, no bias) on the concatenated "
                      "RMS-normalised h of layers 2..L of the neutral sample, cross entropy",
        "sgd_layers": dict(ff.LAYER_SGD),
        "sgd_classifier": dict(ff.CLASSIFIER_SGD),
        "init": "weights Normal(0, 1/sqrt(out)), biases 0, classifier Uniform(-0.1, 0.1)",
    }


def description_for(case):
    widths, k, b = case["widths"], case["classes"], case["batch"]
    return (
        f"Supervised Forward-Forward, dense layers {' -> '.join(map(str, widths))}, K = {k}, "
        f"B = {b}: {STEPS} training steps, one batch x[s] per step. Each step: positives "
        "(onehot(labels) in the first K inputs), negatives (onehot(negative_labels)) and "
        "neutral rows (1/K) go through every layer with the pre-step weights; each layer's "
        "input is RMS-normalised; layer loss = ff_loss + 0.03 * peer_loss (running mean "
        "updated from the positive rows); no gradient crosses layers; the classifier is "
        "trained by cross entropy on the neutral features of layers 2..L. The sum of all "
        "losses is backpropagated and ONE torch.optim.SGD step (two groups, momentum 0.9, "
        "state carried over) is taken. goodness = sum_j h_j^2 per row, positives then "
        "negatives. step0.*_grad are p.grad of step 0 (weight decay not included). "
        "predictions.* are both readouts on x[S-1] with the final weights.")


def main():
    torch.set_num_threads(1)
    os.makedirs(FIXTURES, exist_ok=True)
    for case in CASES:
        inputs = make_inputs(case)
        out32, margins32 = run_case(case, inputs, torch.float32)
        out64, _ = run_case(case, inputs, torch.float64)
        for name in ("predictions.goodness", "predictions.linear"):
            assert torch.equal(out32[name], out64[name]), name
        for readout, margin in margins32.items():
            assert margin > 1e-4, (case["name"], readout, margin)
        param_names = [name for name, _ in
                       ff.ForwardForwardNet(case["widths"], case["classes"]).named_parameters()]
        path, diffs = reference_io.write_golden(
            FIXTURES, case, "forward_forward", description_for(case), config_for(case), inputs,
            out32, out64, param_names, "Benchmarks/reference/forward_forward_golden.py")
        worst = max(diffs.values())
        print(f"{path}: {len(out32)} outputs, max f64 diff {worst:.3g}, "
              f"readout margins {margins32}")


if __name__ == "__main__":
    main()
