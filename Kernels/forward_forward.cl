// Forward-Forward's per-layer work (docs/learning-rules.md), fused: one pass over a row
// gives its goodness, its normalised copy for the next layer, its loss and its gradient.
//
// Both kernels run with any work-group size up to FF_GROUP (a power of two): GPUs launch
// FF_GROUP work-items per row and reduce in local memory; CPU drivers launch one.

#ifndef FF_GROUP
#define FF_GROUP 128
#endif

// Sums `value` over the work-group; every work-item gets the sum.
inline float ff_group_sum(float value, __local float* scratch) {
    const int lid = get_local_id(0);
    const int size = get_local_size(0);
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = size / 2; step > 0; step /= 2) {
        if (lid < step) scratch[lid] += scratch[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float sum = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return sum;
}

// Row r of A [rows, D] (pre-activations): h = relu(A) (or A itself when `relu` is 0),
// ss = sum h^2, normalised[r] = h / (sqrt(ss / D) + eps), sum_squares[r] = ss.
// Rows below `loss_rows` (positives first, `positives` of them, then negatives) also get
// the logistic loss of s = ss - threshold against 1 (positive) or 0 (negative), averaged
// over the loss rows, and d loss / d A with ReLU's gradient taken as 1 (straight-through):
// (sigmoid(s) - y) / loss_rows * 2 h, plus `peer[j]` on positive rows (peer normalisation).
__kernel void ff_rows(__global const float* A, __global float* normalised,
                      __global float* sum_squares, __global float* dA,
                      __global float* row_loss, __global const float* peer, const int D,
                      const int positives, const int loss_rows, const float threshold,
                      const int relu, const int has_peer, const float eps) {
    __local float scratch[FF_GROUP];
    const int r = get_group_id(0);
    const int lid = get_local_id(0);
    const int size = get_local_size(0);
    __global const float* a = A + (size_t)r * D;
    float partial = 0.0f;
    for (int j = lid; j < D; j += size) {
        const float h = relu ? fmax(a[j], 0.0f) : a[j];
        partial += h * h;
    }
    const float ss = ff_group_sum(partial, scratch);
    const float scale = 1.0f / (sqrt(ss / (float)D) + eps);
    __global float* out = normalised + (size_t)r * D;
    for (int j = lid; j < D; j += size) out[j] = (relu ? fmax(a[j], 0.0f) : a[j]) * scale;
    if (lid == 0) sum_squares[r] = ss;
    if (r >= loss_rows) return;

    const float s = ss - threshold;
    const float y = r < positives ? 1.0f : 0.0f;
    const float inv_rows = 1.0f / (float)loss_rows;
    if (lid == 0) {
        // log(1 + exp(s)) - y s, without overflow for large |s|.
        const float softplus = fmax(s, 0.0f) + log1p(exp(-fabs(s)));
        row_loss[r] = (softplus - y * s) * inv_rows;
    }
    const float coefficient = (1.0f / (1.0f + exp(-s)) - y) * inv_rows * 2.0f;
    const int adds_peer = has_peer && r < positives;
    __global float* d = dA + (size_t)r * D;
    for (int j = lid; j < D; j += size) {
        const float h = relu ? fmax(a[j], 0.0f) : a[j];
        d[j] = coefficient * h + (adds_peer ? peer[j] : 0.0f);
    }
}

// Peer normalisation of one layer, in one work-group: the mean activity m_j of unit j over
// the `positives` first rows of relu(A) moves the running mean, r_j = momentum r_j +
// (1 - momentum) m_j, and the loss weight * mean_j (mean(r) - r_j)^2 gives each positive
// entry the gradient peer[j] = weight * 2 / D * (r_j - mean(r)) * (1 - momentum) / positives.
__kernel void ff_peer(__global const float* A, __global float* running_mean,
                      __global float* peer, const int D, const int positives,
                      const float momentum, const float weight) {
    __local float scratch[FF_GROUP];
    const int lid = get_local_id(0);
    const int size = get_local_size(0);
    float partial = 0.0f;
    for (int j = lid; j < D; j += size) {
        float sum = 0.0f;
        for (int i = 0; i < positives; ++i) sum += fmax(A[(size_t)i * D + j], 0.0f);
        const float r = running_mean[j] * momentum + sum / (float)positives * (1.0f - momentum);
        running_mean[j] = r;
        partial += r;
    }
    const float mean = ff_group_sum(partial, scratch) / (float)D;
    const float factor = weight * 2.0f / (float)D * (1.0f - momentum) / (float)positives;
    for (int j = lid; j < D; j += size) peer[j] = factor * (running_mean[j] - mean);
}

// The first layer's pre-activations of rows that differ from computed ones only in the label
// written over their first K inputs (`classes`). Row `source` of A [B, N] is z W^T + b for
// the unit-RMS row z = s (x + e_from) of Z [B, D], whose label entry z[from] is s itself, so
// the image's share is A - b - s W[n, from], and the row with label `to` is that plus
// s W[n, to] + b. A `to` of -1 asks for the neutral row of NEUTRAL [B, D], s' (x + 1/K): its
// label entries are s'/K, the image's share scales by s'/s, and the labels add
// s'/K sum_k W[n, k]. PLAN [rows, 3] holds (source, from, to) per output row, which goes to
// row `first_row` + r of OUT. One work-item per (unit, row).
__kernel void ff_relabel(__global const float* A, __global const float* Z,
                         __global const float* neutral, __global const float* W,
                         __global const float* bias, __global const float* plan,
                         const int units, const int inputs, const int classes, const int rows,
                         const int first_row, __global float* out) {
    const int n = get_global_id(0);
    const int r = get_global_id(1);
    if (n >= units || r >= rows) return;
    const int source = (int)plan[3 * r];
    const int from = (int)plan[3 * r + 1];
    const int to = (int)plan[3 * r + 2];
    __global const float* w = W + (size_t)n * inputs;
    const float s = Z[(size_t)source * inputs + from];
    const float b = bias[n];
    const float image = A[(size_t)source * units + n] - b - s * w[from];
    float value;
    if (to >= 0) {
        value = image + s * w[to];
    } else {
        const float label = neutral[(size_t)source * inputs];
        float sum = 0.0f;
        for (int k = 0; k < classes; ++k) sum += w[k];
        value = (label * (float)classes / s) * image + label * sum;
    }
    out[(size_t)(first_row + r) * units + n] = value + b;
}

// The first layer's weight gradient over rows that differ from computed ones only in their
// label, the transpose of ff_relabel. A batch's positive row z+ = s (x + e_from) and negative
// row z- = s (x + e_to) have sum_b g+ z+ + g- z- = (g+ + g-) z+ + s g- (e_to - e_from): one
// product over the positives with the two gradients summed, then this correction in the
// label columns. PLAN [rows, 3] holds (source, from, to) per row r, whose gradient is row
// `first_row` + r of G [*, N] and whose s is Z[source, from] (Z [B, D] the positives). Adds
// to DW [N, D], column k < `classes`, the plan's terms for k in the plan's order (a row whose
// label stays adds nothing). One work-item per (unit, label).
__kernel void ff_relabel_gradient(__global const float* G, __global const float* Z,
                                  __global const float* plan, const int units,
                                  const int inputs, const int classes, const int rows,
                                  const int first_row, __global float* DW) {
    const int n = get_global_id(0);
    const int k = get_global_id(1);
    if (n >= units || k >= classes) return;
    float sum = 0.0f;
    for (int r = 0; r < rows; ++r) {
        const int source = (int)plan[3 * r];
        const int from = (int)plan[3 * r + 1];
        const int to = (int)plan[3 * r + 2];
        if (to == from || (k != to && k != from)) continue;
        const float term =
            Z[(size_t)source * inputs + from] * G[(size_t)(first_row + r) * units + n];
        if (k == to) sum += term;
        if (k == from) sum -= term;
    }
    DW[(size_t)n * inputs + k] += sum;
}
