// out[c] = alpha * sum_{o,i} x[o, c, i] + beta * out[c] over x viewed as [outer, channels, inner]:
// column sums of a matrix (inner 1) or per-channel sums of NCHW activations (inner H*W).
// One work-item per channel; with inner 1 consecutive work-items read consecutive addresses.
__kernel void channel_sums(__global const float* x,
                           const int outer, const int channels, const int inner,
                           __global float* out, const float alpha, const float beta) {
    const int c = get_global_id(0);
    if (c >= channels) return;
    RunSum sum = run_sum_zero();
    for (int o = 0; o < outer; ++o)
        sum = run_sum_add(sum, x + ((size_t)o * channels + c) * inner, 0, inner, 0.0f);
    out[c] = alpha * run_sum_total(sum) + (beta != 0.0f ? beta * out[c] : 0.0f);
}

// GPUs, for per-channel sums of NCHW activations (outer * inner large, channels few) and
// column sums of many rows: one work-group of GROUP_SUM_SIZE work-items per channel, each
// summing a strided share (of each run, or with inner 1 of the rows), then group_sum. The
// one-work-item-per-channel kernel above leaves a GPU almost idle there: summing a spike
// train's 128,000 rates in one work-item, one dependent add after another, takes milliseconds.
__kernel __attribute__((reqd_work_group_size(GROUP_SUM_SIZE, 1, 1)))
void channel_sums_grouped(__global const float* x,
                          const int outer, const int channels, const int inner,
                          __global float* out, const float alpha, const float beta) {
    __local float partial[GROUP_SUM_SIZE];
    const int c = get_group_id(0);
    const int l = get_local_id(0);
    float sum = 0.0f;
    if (inner == 1) {
        for (int o = l; o < outer; o += GROUP_SUM_SIZE) sum += x[(size_t)o * channels + c];
    } else {
        for (int o = 0; o < outer; ++o) {
            __global const float* p = x + ((size_t)o * channels + c) * inner;
            for (int i = l; i < inner; i += GROUP_SUM_SIZE) sum += p[i];
        }
    }
    sum = group_sum(partial, sum);
    if (l == 0) out[c] = alpha * sum + (beta != 0.0f ? beta * out[c] : 0.0f);
}

// factor[0] = sign * (target / s)^power, s the standard deviation of x's n values with
// Bessel's correction (torch.std); sign where s is 0. x is small (a feedback matrix of D0 x K
// values): CPU drivers sum it in one work-item, GPUs in one work-group. The mean is x[0] plus
// the mean difference from it: OpenCL 1.2 lets a float division be 2.5 ulp off (NVIDIA's is),
// so sum / n of equal values can miss them and give a constant x a deviation above 0.
inline float deviation_scale_of(const float squares, const int n, const float target,
                                const float power, const float sign) {
    const float s = sqrt(squares / (float)(n - 1));
    return s > 0.0f ? sign * pow(target / s, power) : sign;
}

__kernel void deviation_scale(__global const float* x, const int n, const float target,
                              const float power, const float sign, __global float* factor) {
    if (get_global_id(0) != 0) return;
    const float origin = x[0];
    const float mean =
        origin + run_sum_total(run_sum_add(run_sum_zero(), x, 0, n, origin)) / (float)n;
    const float squares = run_sum_total(run_sum_add(run_sum_zero(), x, x, n, mean));
    factor[0] = deviation_scale_of(squares, n, target, power, sign);
}

__kernel __attribute__((reqd_work_group_size(GROUP_SUM_SIZE, 1, 1)))
void deviation_scale_grouped(__global const float* x, const int n, const float target,
                             const float power, const float sign, __global float* factor) {
    __local float partial[GROUP_SUM_SIZE];
    const int l = get_local_id(0);
    const float origin = x[0];
    float sum = 0.0f;
    for (int i = l; i < n; i += GROUP_SUM_SIZE) sum += x[i] - origin;
    const float mean = origin + group_sum(partial, sum) / (float)n;
    float squares = 0.0f;
    for (int i = l; i < n; i += GROUP_SUM_SIZE) squares += (x[i] - mean) * (x[i] - mean);
    squares = group_sum(partial, squares);
    if (l == 0) factor[0] = deviation_scale_of(squares, n, target, power, sign);
}
