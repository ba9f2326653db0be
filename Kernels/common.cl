// Shared definitions, prepended to every program by the kernel registry.
// Activation codes match Activation.code in Sources/SigProp/Device/Operations.swift.
#define ACT_IDENTITY 0
#define ACT_RELU 1
#define ACT_LEAKY_RELU 2
#define ACT_TANH 3

#ifndef LEAKY_SLOPE
#define LEAKY_SLOPE 0.01f // PyTorch's LeakyReLU default, as the reference
#endif

inline float activate(const float x, const int act) {
    switch (act) {
    case ACT_RELU: return x > 0.0f ? x : 0.0f;
    case ACT_LEAKY_RELU: return x > 0.0f ? x : LEAKY_SLOPE * x;
    case ACT_TANH: return tanh(x);
    default: return x;
    }
}

// act'(z) read off a = act(z): ReLU's derivative at 0 is 0, LeakyReLU's is the slope (PyTorch).
inline float activation_derivative(const float a, const int act) {
    switch (act) {
    case ACT_RELU: return a > 0.0f ? 1.0f : 0.0f;
    case ACT_LEAKY_RELU: return a > 0.0f ? 1.0f : LEAKY_SLOPE;
    case ACT_TANH: return 1.0f - a * a;
    default: return 1.0f;
    }
}
