// Leaky integrate-and-fire neurons over a sample's whole time loop (docs/spiking.md): one
// work-item per (sample, unit) keeps the membrane in a register across the T steps, so a
// block's dynamics are one launch per batch whatever T is.
//
// Layout: time-major planes. A plane is a batch's B x N values (sample-major, as any
// [B, N] tensor); step t's plane starts at t * plane. A constant current (direct encoding,
// the context) is one plane read at every step.
//
// Dynamics (snnTorch's Leaky, reset from the previous step's spike, which is detached):
//   subtract: U[t] = beta U[t-1] + I[t] - threshold S[t-1]
//   zero:     U[t] = (1 - S[t-1]) (beta U[t-1] + I[t])
//   S[t] = U[t] > threshold,  U[-1] = S[-1] = 0.
// The block learns from its representation R = mean over t of r(U[t]): the membrane itself
// (r(u) = u, `surrogate` 0), or a smooth spike before the threshold: fast sigmoid (1)
// r = 1/2 (1 + k x / (1 + k |x|)), arctan (2) r = 1/2 + atan(pi/2 k x) / pi, x = u - threshold.

#define SURROGATE_NONE 0
#define SURROGATE_FAST_SIGMOID 1
#define SURROGATE_ARCTAN 2

#define LIF_PI 3.14159265358979f

inline float lif_surrogate(const float x, const int kind, const float k) {
    if (kind == SURROGATE_FAST_SIGMOID) return 0.5f * (1.0f + k * x / (1.0f + k * fabs(x)));
    return 0.5f + atan(0.5f * LIF_PI * k * x) / LIF_PI;
}

// d r / d u for the surrogate kinds (snnTorch's surrogate gradients, the fast sigmoid's
// scaled by k / 2 so that r spans 0...1 like a spike).
inline float lif_surrogate_slope(const float x, const int kind, const float k) {
    if (kind == SURROGATE_FAST_SIGMOID) {
        const float d = 1.0f + k * fabs(x);
        return 0.5f * k / (d * d);
    }
    const float a = 0.5f * LIF_PI * k * x;
    return 0.5f * k / (1.0f + a * a);
}

// The forward pass: spikes of every step, the representation R and the firing rate
// (spikes / T) of each (sample, unit); with `write_membrane` the membrane of every step (what
// the gradient of a surrogate or of a learned beta reads), with `write_steps` r(U[t]) of
// every step (for a loss at every step).
//
// A launch runs `count` of the sample's `steps` steps from step `first` (all of them: first 0,
// count = steps); its planes (current, spikes, membrane, r) are those of its own steps. Past
// the first step it starts from the membrane in `state` (the spike before is U > threshold)
// and adds to R and the rate; with `keep_state` it leaves its last membrane there. So the
// time loop can run in chunks of steps, each holding only its own planes.
__kernel void lif_forward(__global const float* current, __global float* membrane,
                          __global float* spikes, __global float* representation,
                          __global float* rate, __global float* step_representation,
                          const int write_membrane, const int write_steps, const int steps,
                          const int plane, const int constant_current,
                          __global const float* beta_value, __global const float* threshold_value,
                          const int reset_zero, const int surrogate, const float slope,
                          __global float* state, const int first, const int count,
                          const int keep_state) {
    const int i = get_global_id(0);
    if (i >= plane) return;
    // beta and the threshold live on the device, where a block may learn them; beta is
    // clamped to 0...1 as snnTorch clamps it.
    const float beta = clamp(beta_value[0], 0.0f, 1.0f), threshold = threshold_value[0];
    float u = first > 0 ? state[i] : 0.0f;
    float s = first > 0 && u > threshold ? 1.0f : 0.0f, sum = 0.0f, fired = 0.0f;
    for (int t = 0; t < count; ++t) {
        const size_t at = (size_t)t * plane + i;
        const float in = current[constant_current ? (size_t)i : at];
        u = reset_zero ? (1.0f - s) * (beta * u + in) : beta * u + in - threshold * s;
        s = u > threshold ? 1.0f : 0.0f;
        if (write_membrane) membrane[at] = u;
        spikes[at] = s;
        const float r =
            surrogate == SURROGATE_NONE ? u : lif_surrogate(u - threshold, surrogate, slope);
        if (write_steps) step_representation[at] = r;
        sum += r;
        fired += s;
    }
    const float mean = sum / (float)steps, spiked = fired / (float)steps;
    representation[i] = first > 0 ? representation[i] + mean : mean;
    rate[i] = first > 0 ? rate[i] + spiked : spiked;
    if (keep_state) state[i] = u;
}

// d loss / d current from d loss / d R (one plane; T planes with `per_step`, one per step's
// loss, each weighing 1/T): a reverse scan of the membrane recurrence with the reset held
// constant. V[t] = d loss / d U[t] = g[t] + a[t+1] V[t+1], a[t] = dU[t]/dU[t-1] (beta, or
// beta (1 - S[t-1]) under a zero reset), and d loss / d I[t] = c[t] V[t] with c[t] = 1, or
// 1 - S[t-1] under a zero reset. A constant current gets the sum over steps. The membrane
// is read for a surrogate's slope and for beta's gradient only.
//
// With `learn_neuron`, each (sample, unit) also writes its share of d loss / d beta and
// d loss / d threshold into neuron_partials[2i], [2i+1] (summed over the batch by the
// caller): dU[t]/dbeta = (1 - S[t-1] under a zero reset) U[t-1]; the threshold enters the
// subtracting reset, -S[t-1] (the spike held constant, the threshold not), and a surrogate's
// r(U - threshold), whose slope it takes with the opposite sign.
__kernel void lif_backward(__global const float* membrane, __global const float* spikes,
                           __global const float* gradient, __global float* current_gradient,
                           __global float* neuron_partials, const int learn_neuron,
                           const int steps, const int plane, const int constant_current,
                           const int per_step, __global const float* beta_value,
                           __global const float* threshold_value, const int reset_zero,
                           const int surrogate, const float slope) {
    const int i = get_global_id(0);
    if (i >= plane) return;
    const float raw_beta = beta_value[0], threshold = threshold_value[0];
    const float beta = clamp(raw_beta, 0.0f, 1.0f);
    const float inv_steps = 1.0f / (float)steps;
    float v = 0.0f, next_factor = 0.0f, total = 0.0f, d_beta = 0.0f, d_threshold = 0.0f;
    for (int t = steps - 1; t >= 0; --t) {
        const size_t at = (size_t)t * plane + i;
        float g = gradient[per_step ? at : (size_t)i] * inv_steps;
        if (surrogate != SURROGATE_NONE) {
            g *= lif_surrogate_slope(membrane[at] - threshold, surrogate, slope);
            d_threshold -= g;
        }
        v = g + next_factor * v;
        const float s_prev = t > 0 ? spikes[at - plane] : 0.0f;
        const float keep = reset_zero ? 1.0f - s_prev : 1.0f;
        if (constant_current) total += keep * v;
        else current_gradient[at] = keep * v;
        if (learn_neuron && t > 0) {
            d_beta += v * keep * membrane[at - plane];
            if (!reset_zero) d_threshold -= v * s_prev;
        }
        next_factor = beta * keep;
    }
    if (constant_current) current_gradient[i] = total;
    if (learn_neuron) {
        // torch.clamp's gradient: none outside 0...1.
        neuron_partials[2 * (size_t)i] = raw_beta >= 0.0f && raw_beta <= 1.0f ? d_beta : 0.0f;
        neuron_partials[2 * (size_t)i + 1] = d_threshold;
    }
}

// A surrogate's gradient at each step of a chunk, for the chunked recomputation
// (docs/spiking.md, memory and T): out[t][i] = weight[t] * r'(U[t][i] - threshold) * G[i],
// where G is d loss / d R and weight[t] carries the step's 1/T and its share of the leaky
// sums that stand in for the reverse scan.
__kernel void lif_surrogate_gradient(__global const float* membrane,
                                     __global const float* gradient,
                                     __global const float* weight, __global float* out,
                                     const int count, const int plane,
                                     __global const float* threshold_value, const int surrogate,
                                     const float slope) {
    const int i = get_global_id(0);
    if (i >= plane) return;
    const float threshold = threshold_value[0], g = gradient[i];
    for (int t = 0; t < count; ++t) {
        const size_t at = (size_t)t * plane + i;
        out[at] = weight[t] * lif_surrogate_slope(membrane[at] - threshold, surrogate, slope) * g;
    }
}

// Input encodings: the image (pixels in 0...1, clamped) as a spike train of T planes.
// Unfused arithmetic, so that a latency's step is the CPU fallback's on every device.
#pragma OPENCL FP_CONTRACT OFF
#define ENCODE_RATE 1
#define ENCODE_LATENCY 2

// Wellons' lowbias32 integer hash: the same 32 bits for the same input on every device.
inline uint spike_hash(uint x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

// rate: S[t] = 1 with probability x, from a uniform u[t] in [0, 1) (24 bits) drawn by
// hashing (seed, t, pixel), so a seeded train is the same on every backend and independent
// of the launch. latency: one spike at step round((1 - x)(T - 1)) (the brightest pixels
// first), none where x = 0. A launch writes the `count` planes of steps first ..< first +
// count of the T-step train.
__kernel void spike_encode(__global const float* images, __global float* trains,
                           const int steps, const int plane, const int kind, const int seed,
                           const int first, const int count) {
    const int i = get_global_id(0);
    if (i >= plane) return;
    const float x = clamp(images[i], 0.0f, 1.0f);
    const float delay = (1.0f - x) * (float)(steps - 1);
    const int fire_at = x > 0.0f ? (int)(delay + 0.5f) : -1;
    const uint stream = spike_hash((uint)seed);
    for (int t = first; t < first + count; ++t) {
        const uint index = (uint)t * (uint)plane + (uint)i;
        float s;
        if (kind == ENCODE_RATE) {
            const uint h = spike_hash(spike_hash(index) + stream);
            s = (float)(h >> 8) * (1.0f / 16777216.0f) < x ? 1.0f : 0.0f;
        } else {
            s = t == fire_at ? 1.0f : 0.0f;
        }
        trains[(size_t)(t - first) * plane + i] = s;
    }
}
