"""CUDA C++ source of the further elementwise activations: leaky_relu, elu, selu, softplus,
gelu (exact and tanh approximation), silu/swish and mish, forward and backward, plain and fused
with a bias (and the bias gradient's column sums).

One family, ``activation_extra``, in the format of :mod:`fastnn.kernels.cuda.sources` (a
``template <typename T>`` device function per kernel, ``extern "C"`` wrappers
``fastnn_<kernel>_f32`` / ``_f64`` declared by the ``FASTNN_ACTIVATION_EXTRA_KERNELS``
macro). Importing this module adds the family to :data:`fastnn.kernels.cuda.sources.SOURCES`,
so the compile test (``tests/test_cuda_compile.py``) builds it for every architecture and
dtype. Text only: needs neither CuPy nor a GPU.

The backward kernels read ``s``: the activation's input x for gelu, gelu_tanh, silu and mish,
its output y for the others (``uses_input`` of the reference table). ``alpha`` arrives already
resolved (:func:`fastnn.kernels.reference.activations.resolve_alpha`). Every formula is the
reference's overflow-free form.
"""

from __future__ import annotations

from fastnn.kernels.cuda.sources import KernelSource, register_source
from fastnn.kernels.reference.activations import (
    GELU_TANH_CUBIC,
    GELU_TANH_SCALE,
    SELU_ALPHA,
    SELU_SCALE,
)

#: Activation name -> code understood by the kernels of this family.
ACTIVATION_EXTRA_CODES: dict[str, int] = {
    "leaky_relu": 1,
    "elu": 2,
    "selu": 3,
    "softplus": 4,
    "gelu": 5,
    "gelu_tanh": 6,
    "silu": 7,
    "mish": 8,
}


def _defines() -> str:
    lines = [
        f"#define FASTNN_ACTX_{name.upper()} {code}"
        for name, code in ACTIVATION_EXTRA_CODES.items()
    ]
    lines += [
        f"#define FASTNN_SELU_SCALE {SELU_SCALE!r}",
        f"#define FASTNN_SELU_ALPHA {SELU_ALPHA!r}",
        f"#define FASTNN_GELU_TANH_SCALE {GELU_TANH_SCALE!r}",
        f"#define FASTNN_GELU_TANH_CUBIC {GELU_TANH_CUBIC!r}",
    ]
    return "\n".join(lines) + "\n"


_BODY = _defines() + r"""
namespace fastnn {

template <typename T> struct MathX;

template <> struct MathX<float> {
    static __device__ __forceinline__ float exp(float x) { return expf(x); }
    static __device__ __forceinline__ float expm1(float x) { return expm1f(x); }
    static __device__ __forceinline__ float log1p(float x) { return log1pf(x); }
    static __device__ __forceinline__ float erfc(float x) { return erfcf(x); }
    static __device__ __forceinline__ float tanh(float x) { return tanhf(x); }
};

template <> struct MathX<double> {
    static __device__ __forceinline__ double exp(double x) { return ::exp(x); }
    static __device__ __forceinline__ double expm1(double x) { return ::expm1(x); }
    static __device__ __forceinline__ double log1p(double x) { return ::log1p(x); }
    static __device__ __forceinline__ double erfc(double x) { return ::erfc(x); }
    static __device__ __forceinline__ double tanh(double x) { return ::tanh(x); }
};

// sigmoid from e = exp(-|v|) <= 1: never overflows.
template <typename T>
__device__ __forceinline__ T sigmoid_x(T v) {
    const T e = MathX<T>::exp(-fabs(v));
    const T big = T(1) / (T(1) + e);
    return v >= T(0) ? big : e * big;
}

// softplus = max(v, 0) + log1p(exp(-|v|)): never overflows.
template <typename T>
__device__ __forceinline__ T softplus_x(T v) {
    return (v > T(0) ? v : T(0)) + MathX<T>::log1p(MathX<T>::exp(-fabs(v)));
}

template <typename T>
__device__ __forceinline__ T clamp_x(T v, T bound) {
    return v < -bound ? -bound : (v > bound ? bound : v);
}

// tanh(sqrt(2/pi) (c + 0.044715 c^3)) with c clamped where the tanh is +-1 anyway.
template <typename T>
__device__ __forceinline__ T gelu_tanh_t(T c) {
    const T inner = T(FASTNN_GELU_TANH_SCALE) * c * (T(1) + T(FASTNN_GELU_TANH_CUBIC) * c * c);
    return MathX<T>::tanh(inner);
}

template <typename T>
__device__ __forceinline__ T actx_forward(int act, T x, T alpha) {
    switch (act) {
        case FASTNN_ACTX_LEAKY_RELU:
            return x > T(0) ? x : alpha * x;
        case FASTNN_ACTX_ELU:
            return x > T(0) ? x : alpha * MathX<T>::expm1(x);
        case FASTNN_ACTX_SELU:
            return x > T(0) ? T(FASTNN_SELU_SCALE) * x
                            : T(FASTNN_SELU_SCALE * FASTNN_SELU_ALPHA) * MathX<T>::expm1(x);
        case FASTNN_ACTX_SOFTPLUS:
            return softplus_x(x);
        case FASTNN_ACTX_GELU:
            return x * T(0.5) * MathX<T>::erfc(x * T(-0.70710678118654752440));
        case FASTNN_ACTX_GELU_TANH:
            return x * T(0.5) * (T(1) + gelu_tanh_t(clamp_x(x, T(50))));
        case FASTNN_ACTX_SILU:
            return x * sigmoid_x(x);
        case FASTNN_ACTX_MISH:
            return x * MathX<T>::tanh(softplus_x(x));
        default:
            return x;
    }
}

// act'(x) from s: the output y (leaky_relu, elu, selu, softplus) or the input x (the others).
template <typename T>
__device__ __forceinline__ T actx_grad(int act, T s, T alpha) {
    switch (act) {
        case FASTNN_ACTX_LEAKY_RELU:
            return s > T(0) ? T(1) : alpha;
        case FASTNN_ACTX_ELU:
            return s > T(0) ? T(1) : s + alpha;
        case FASTNN_ACTX_SELU:
            return s > T(0) ? T(FASTNN_SELU_SCALE) : s + T(FASTNN_SELU_SCALE * FASTNN_SELU_ALPHA);
        case FASTNN_ACTX_SOFTPLUS:
            return -MathX<T>::expm1(-s);  // sigmoid(x) = 1 - exp(-softplus(x))
        case FASTNN_ACTX_GELU: {
            const T c = clamp_x(s, T(40));
            return T(0.5) * MathX<T>::erfc(s * T(-0.70710678118654752440))
                   + s * MathX<T>::exp(T(-0.5) * c * c) * T(0.39894228040143267794);
        }
        case FASTNN_ACTX_GELU_TANH: {
            const T c = clamp_x(s, T(50));
            const T t = gelu_tanh_t(c);
            const T slope = T(0.5 * FASTNN_GELU_TANH_SCALE)
                            * (T(1) + T(3.0 * FASTNN_GELU_TANH_CUBIC) * c * c);
            return T(0.5) * (T(1) + t) + c * (T(1) - t * t) * slope;
        }
        case FASTNN_ACTX_SILU: {
            const T sig = sigmoid_x(s);
            return sig * (T(1) + s * (T(1) - sig));
        }
        case FASTNN_ACTX_MISH: {
            const T t = MathX<T>::tanh(softplus_x(s));
            return t + s * (T(1) - t * t) * sigmoid_x(s);
        }
        default:
            return T(1);
    }
}

// Elementwise kernels read index i and write index i only, so outputs may alias inputs.
template <typename T>
__device__ __forceinline__ void activation_extra_forward(
    const T* x, T* y, long long n, int act, T alpha) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        y[i] = actx_forward(act, x[i], alpha);
    }
}

template <typename T>
__device__ __forceinline__ void activation_extra_backward(
    const T* dy, const T* s, T* dx, long long n, int act, T alpha) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        dx[i] = dy[i] * actx_grad(act, s[i], alpha);
    }
}

// y = act(z + b), z: (n / cols, cols) row-major, b: (cols,).
template <typename T>
__device__ __forceinline__ void bias_activation_extra(
    const T* z, const T* b, T* y, long long n, long long cols, int act, T alpha) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        y[i] = actx_forward(act, z[i] + b[i % cols], alpha);
    }
}

// dz = dy * act'(s), written, and its column sums over a chunk of rows: block
// (COLUMN_TILE, COLUMN_ROWS) sums columns [blockIdx.x * COLUMN_TILE, +COLUMN_TILE) over rows
// [blockIdx.y * rows_per_chunk, +rows_per_chunk) into partial[blockIdx.y * cols + col].
template <typename T>
__device__ __forceinline__ void bias_activation_extra_backward(
    const T* dy, const T* s, T* dz, T* partial, long long rows, long long cols,
    long long rows_per_chunk, int act, T alpha) {
    __shared__ T tile[FASTNN_COLUMN_ROWS][FASTNN_COLUMN_TILE + 1];
    const long long col = static_cast<long long>(blockIdx.x) * FASTNN_COLUMN_TILE + threadIdx.x;
    const long long start = static_cast<long long>(blockIdx.y) * rows_per_chunk;
    const long long end = start + rows_per_chunk < rows ? start + rows_per_chunk : rows;
    T acc = T(0);
    if (col < cols) {
        for (long long r = start + threadIdx.y; r < end; r += FASTNN_COLUMN_ROWS) {
            const long long i = r * cols + col;
            const T g = dy[i] * actx_grad(act, s[i], alpha);
            dz[i] = g;
            acc += g;
        }
    }
    tile[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
        T total = tile[0][threadIdx.x];
        for (int k = 1; k < FASTNN_COLUMN_ROWS; ++k) {
            total += tile[k][threadIdx.x];
        }
        partial[static_cast<long long>(blockIdx.y) * cols + col] = total;
    }
}

}  // namespace fastnn

#define FASTNN_ACTIVATION_EXTRA_KERNELS(T, S)                                               \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_activation_extra_forward_##S(const T* x, T* y, long long n, int act, T alpha) {      \
    fastnn::activation_extra_forward<T>(x, y, n, act, alpha);                               \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_activation_extra_backward_##S(                                                       \
    const T* dy, const T* s, T* dx, long long n, int act, T alpha) {                        \
    fastnn::activation_extra_backward<T>(dy, s, dx, n, act, alpha);                         \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_bias_activation_extra_##S(                                                           \
    const T* z, const T* b, T* y, long long n, long long cols, int act, T alpha) {          \
    fastnn::bias_activation_extra<T>(z, b, y, n, cols, act, alpha);                         \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_COLUMN_THREADS)                         \
fastnn_bias_activation_extra_backward_##S(                                                  \
    const T* dy, const T* s, T* dz, T* partial, long long rows, long long cols,             \
    long long rows_per_chunk, int act, T alpha) {                                           \
    fastnn::bias_activation_extra_backward<T>(dy, s, dz, partial, rows, cols,               \
                                              rows_per_chunk, act, alpha);                  \
}
"""

ACTIVATION_EXTRA = register_source(
    KernelSource(
        name="activation_extra",
        kernels=(
            "fastnn_activation_extra_forward",
            "fastnn_activation_extra_backward",
            "fastnn_bias_activation_extra",
            "fastnn_bias_activation_extra_backward",
        ),
        body=_BODY,
    )
)
