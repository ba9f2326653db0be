"""Golden vectors for the PEPITA rule, produced with the model code of the reference trainer
in pepita.py (the same PepitaNet.deltas and torch.optim.SGD as training).

Each case runs S = 3 training steps, one batch per step, from a fixed random state: no
dropout (so that the steps are deterministic), a fixed learning rate, SGD momentum 0.9, and
the clean pass's error in the last layer's update. F is drawn ten times larger than in
training (scale 0.5 instead of 0.05) so that h - h^mod is well above float32 rounding and
some units change sides of the ReLU between the two passes. The case is run twice, in
float32 (stored) and in float64 (for f64_max_abs_diff).

Usage (pip install torch numpy):
  python3 Benchmarks/reference/pepita_golden.py
writes Tests/SigPropTests/Fixtures/pepita_*.json.
"""
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pepita  # noqa: E402
import reference_io  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO_ROOT, "Tests", "SigPropTests", "Fixtures")
STEPS = 3
MOMENTUM = 0.9
FEEDBACK_SCALE = 0.5

CASES = [
    dict(name="pepita_B6_D12_H8_K4", batch=6, widths=[12, 8, 4], lr=0.1, weight_decay=0.0,
         seed=5101),
    dict(name="pepita_B5_D10_H7x6_K3", batch=5, widths=[10, 7, 6, 3], lr=0.1,
         weight_decay=1e-3, seed=5111),
    # Weight mirroring: F is composed from the factors before each modulated pass, and the
    # factors mirror the updated weights after it, from the noise given as inputs.
    dict(name="pepita_mirror_B6_D12_H8x7_K4", batch=6, widths=[12, 8, 7, 4], lr=0.1,
         weight_decay=0.0, seed=5121, mirror=dict(rate=0.1, decay=0.5, noise=0.5)),
]


def make_inputs(case):
    """Inputs and initial state, drawn in float32 from the case's seed."""
    g = torch.Generator().manual_seed(case["seed"])
    b, widths = case["batch"], case["widths"]
    k = widths[-1]
    x = torch.rand(STEPS, b, widths[0], generator=g)
    labels = torch.randint(0, k, (STEPS, b), generator=g)
    inputs = {"x": x, "labels": labels}
    model = pepita.PepitaNet(widths, g)
    for name, p in model.named_parameters():
        inputs["init." + name] = p.detach().clone()
    inputs["F"] = pepita.feedback_matrix(widths[0], k, FEEDBACK_SCALE, g)
    if "mirror" in case:
        for l, factor in enumerate(pepita.mirror_factors(widths, FEEDBACK_SCALE, g)):
            inputs[f"init.factors.{l}"] = factor
        for step in range(STEPS):
            noises = model.mirror_noise(b, case["mirror"]["noise"], g)
            for l, xi in enumerate(noises):
                inputs[f"step{step}.noise.{l}"] = xi
    return inputs


def run_case(case, inputs, dtype):
    """S training steps from inputs, in dtype; returns (name -> tensor, prediction margin)."""
    widths = case["widths"]
    model = pepita.PepitaNet(widths).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(inputs["init." + name].to(dtype))
    feedback = inputs["F"].to(dtype)
    mirror = case.get("mirror")
    factors = [inputs[f"init.factors.{l}"].to(dtype).clone()
               for l in range(len(widths) - 1)] if mirror else None
    optimizer = model.make_optimizer(case["lr"], MOMENTUM, case["weight_decay"])
    out = {}
    for s in range(STEPS):
        x = inputs["x"][s].to(dtype)
        if mirror:
            feedback = pepita.compose_feedback(factors, FEEDBACK_SCALE)
            out[f"step{s}.F"] = feedback.clone()
        deltas, error, loss = model.deltas(x, inputs["labels"][s], feedback)
        out[f"step{s}.error"] = error
        out[f"step{s}.loss"] = loss
        for l, delta in enumerate(deltas):
            # A copy: the optimizer must not be able to change what is recorded.
            out[f"step{s}.layers.{l}.delta"] = delta.clone()
        model.step(optimizer, deltas)
        if mirror:
            noises = [inputs[f"step{s}.noise.{l}"].to(dtype) for l in range(len(factors))]
            model.mirror(factors, noises, mirror["rate"], mirror["decay"])
    for name, p in model.named_parameters():
        out[f"final.{name}"] = p.detach().clone()
    for l, factor in enumerate(factors or []):
        out[f"final.factors.{l}"] = factor.clone()
    for name, p in model.named_parameters():
        out[f"final.{name}.momentum_buffer"] = optimizer.state[p]["momentum_buffer"].clone()
    last_x = inputs["x"][-1].to(dtype)
    out["predictions"] = model.predict(last_x)
    logits = model.forward_pass(last_x)[1]
    top = logits.topk(2, dim=1).values
    # The smallest gap between the best and second-best logit, relative to their scale: a
    # prediction is only a fair test if rounding cannot flip it.
    margin = ((top[:, 0] - top[:, 1]) / top[:, 0].abs().clamp(min=1.0)).min().item()
    return out, margin


def config_for(case):
    widths = case["widths"]
    config = {
        "widths": widths,
        "num_classes": widths[-1],
        "batch": case["batch"],
        "steps": STEPS,
        "activation": "ReLU on hidden layers; the output layer is linear (logits)",
        "bias": False,
        "error": "e = softmax(logits) - onehot(labels), clean pass",
        "modulation": "x_mod = x + e @ F^T, F [D0, K]",
        "deltas": "dW_1 = (h_1 - h_1^mod)^T x_mod / B; dW_l = (h_l - h_l^mod)^T h_{l-1}^mod / B; "
                  "dW_L = e^T h_{L-1}^mod / B (clean-pass e); h after ReLU",
        "loss": "cross entropy of the clean pass's logits, mean over the batch",
        "dropout": 0.0,
        "sgd": {"lr": case["lr"], "momentum": MOMENTUM, "weight_decay": case["weight_decay"],
                "dampening": 0.0, "nesterov": False,
                "update": "buf = momentum * buf + (dW + weight_decay * W) (buf = that sum on "
                          "the first step); W -= lr * buf"},
        "init": "W_l uniform in +-sqrt(6 / in_features); F uniform in "
                f"+-{FEEDBACK_SCALE} * sqrt(6 / D0)",
    }
    if "mirror" in case:
        config["feedback_scale"] = FEEDBACK_SCALE
        config["mirror"] = dict(case["mirror"])
        config["mirror"]["rule"] = (
            "before each step's modulated pass: P = B_1 ... B_L, every factor *= (sigma / "
            f"std(P))^(1/L), F = -(sigma / std(P)) P, sigma = {FEEDBACK_SCALE} * sqrt(2 / D0) "
            "(step<s>.F); after the step's SGD update: y_l = relu(W_l xi_l) (the output "
            "layer: softmax(W_L xi_L)), B_l = (1 - rate * decay) B_l + rate * xi_l^T y_l / B, "
            "xi_l = step<s>.noise.<l>")
        config["init"] += "; init.factors.<l> normal, F (input) unused"
    return config


def description_for(case):
    widths, b = case["widths"], case["batch"]
    return (
        f"PEPITA, dense layers {' -> '.join(map(str, widths))} without biases, K = "
        f"{widths[-1]}, B = {b}: {STEPS} training steps, one batch x[s] per step. Each step: "
        "a clean pass (ReLU hidden layers, linear output), e = softmax(logits) - onehot, a "
        "modulated pass from x + e F^T with the same weights, then dW per layer (the batch "
        "mean of the outer products in config.deltas) is set as p.grad and ONE "
        "torch.optim.SGD step (momentum 0.9, state carried over) is taken. "
        "step<s>.layers.<l>.delta is dW before the optimizer (weight decay not included). "
        "predictions are the clean-pass argmax on x[S-1] with the final weights.")


def main():
    torch.set_num_threads(1)
    os.makedirs(FIXTURES, exist_ok=True)
    for case in CASES:
        inputs = make_inputs(case)
        out32, margin = run_case(case, inputs, torch.float32)
        out64, _ = run_case(case, inputs, torch.float64)
        assert torch.equal(out32["predictions"], out64["predictions"])
        assert margin > 1e-4, (case["name"], margin)
        param_names = [name for name, _ in pepita.PepitaNet(case["widths"]).named_parameters()]
        path, diffs = reference_io.write_golden(
            FIXTURES, case, "pepita", description_for(case), config_for(case), inputs, out32,
            out64, param_names, "Benchmarks/reference/pepita_golden.py")
        worst = max(diffs.values())
        print(f"{path}: {len(out32)} outputs, max f64 diff {worst:.3g}, "
              f"prediction margin {margin:.3g}")


if __name__ == "__main__":
    main()
