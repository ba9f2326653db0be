// The row-wise part of Signal Propagation's local loss (see docs/signal-propagation.md):
// from Y and YY (B x N; N = B for a block, N = K classes for the output layer's cross entropy
// against one-hot YY) build the target mask M, dY = (m_i softmax(Y)_ij - M_ij) / B and each
// row's share of the loss, -sum_j M_ij log_softmax(Y_i)_j / B. One work-item per row.
#define LOSS_MAX_ALL 0
#define LOSS_MAX_RANDOM 1
#define LOSS_TOP_K 2
// top-k keeps the k largest of a row in private memory up to this k; beyond it, it counts.
#define TOP_K_HELD 16

// The k-th largest entry of yy[0..<n], counting repeats; -INFINITY where k > n. Entry j has
// fewer than k entries above yy[j] + tolerance exactly when this one is not above it, so the
// mask needs one pass over the row (k insertions at most per entry) instead of one per entry.
inline float kth_largest(__global const float* yy, const int n, const int k) {
    float held[TOP_K_HELD];
    for (int t = 0; t < k; ++t) held[t] = -INFINITY;
    for (int l = 0; l < n; ++l) {
        const float v = yy[l];
        if (!(v > held[k - 1])) continue;
        int t = k - 1;
        for (; t > 0 && held[t - 1] < v; --t) held[t] = held[t - 1];
        held[t] = v;
    }
    return held[k - 1];
}

__kernel void local_loss_rows(__global const float* Y, __global const float* YY,
                              __global float* mask, __global float* dY, __global float* row_loss,
                              const int B, const int N, const int kind, const int top_k,
                              const float tie_tolerance) {
    const int i = get_global_id(0);
    if (i >= B) return;
    __global const float* y = Y + (size_t)i * N;
    __global const float* yy = YY + (size_t)i * N;
    __global float* mrow = mask + (size_t)i * N;
    __global float* drow = dY + (size_t)i * N;

    float yy_max = -INFINITY, scale = 0.0f;
    for (int j = 0; j < N; ++j) {
        yy_max = fmax(yy_max, yy[j]);
        scale = fmax(scale, fabs(yy[j]));
    }
    // Entries within `tolerance` of each other are ties (LocalLossKind.tieTolerance: YY's
    // entries of one label's rows can differ in their last bits).
    const float tolerance = tie_tolerance * scale;
    int first = 0;
    while (first < N - 1 && yy[first] < yy_max - tolerance) ++first;

    const int held = kind == LOSS_TOP_K && top_k >= 1 && top_k <= TOP_K_HELD;
    const float kth = held ? kth_largest(yy, N, top_k) : -INFINITY;
    float m = 0.0f;
    for (int j = 0; j < N; ++j) {
        int selected;
        if (kind == LOSS_MAX_ALL) {
            selected = yy[j] >= yy_max - tolerance;
        } else if (kind == LOSS_MAX_RANDOM) {
            selected = j == first;
        } else if (held) {
            selected = !(kth > yy[j] + tolerance);
        } else {
            int greater = 0;
            for (int l = 0; l < N; ++l) greater += yy[l] > yy[j] + tolerance;
            selected = greater < top_k;
        }
        mrow[j] = selected ? 1.0f : 0.0f;
        m += mrow[j];
    }

    float y_max = -INFINITY;
    for (int j = 0; j < N; ++j) y_max = fmax(y_max, y[j]);
    float sum = 0.0f;
    for (int j = 0; j < N; ++j) sum += exp(y[j] - y_max);
    const float log_sum = log(sum);
    const float inv_b = 1.0f / (float)B;
    float loss = 0.0f;
    for (int j = 0; j < N; ++j) {
        const float log_softmax = y[j] - y_max - log_sum;
        loss -= mrow[j] * log_softmax;
        drow[j] = (m * exp(log_softmax) - mrow[j]) * inv_b;
    }
    row_loss[i] = loss * inv_b;
}
