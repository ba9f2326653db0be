// out[j] = alpha * sum_r x[r, j] + beta * out[j] over a rows x columns matrix.
// One work-item per column: consecutive work-items read consecutive addresses.
__kernel void column_sums(__global const float* x, const int rows, const int columns,
                          __global float* out, const float alpha, const float beta) {
    const int j = get_global_id(0);
    if (j >= columns) return;
    float sum = 0.0f;
    for (int r = 0; r < rows; ++r) sum += x[(size_t)r * columns + j];
    out[j] = alpha * sum + (beta != 0.0f ? beta * out[j] : 0.0f);
}
