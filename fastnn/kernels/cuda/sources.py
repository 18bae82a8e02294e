"""CUDA C++ source text of every fastnn kernel, one module per op family.

Each kernel is written once as a ``template <typename T>`` device function and exported
through ``extern "C"`` wrappers named ``fastnn_<kernel>_f32`` and ``fastnn_<kernel>_f64``.
A family's source defines one macro, ``FASTNN_<FAMILY>_KERNELS(T, S)``, that declares
all of its wrappers for element type ``T`` with name suffix ``S``;
:meth:`KernelSource.code` appends the instantiation for the requested dtype, so float32
and float64 share one source text and each dtype compiles to its own small module.

The launch constants and flag values that the host code in :mod:`fastnn.kernels.cuda.ops`
relies on are defined here in Python and written into the source as ``#define``\\ s, so
the two sides cannot drift apart. This module holds text only: it needs neither CuPy
nor a GPU. Every family is registered in :data:`SOURCES`, which
``tests/test_cuda_compile.py`` compiles with NVRTC; a family defined in another module of
this package (``<name>_sources.py``) joins it with :func:`register_source` on import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# dtype name -> (C type, kernel name suffix)
DTYPES: dict[str, tuple[str, str]] = {
    "float32": ("float", "f32"),
    "float64": ("double", "f64"),
}

# Launch geometry shared by host and device code.
ELEMENTWISE_THREADS = 256  # threads per block of the grid-stride elementwise kernels
ROW_THREADS = 256  # threads per block of the row kernels (several rows per block)
ROW_MAX_THREADS = 512  # most threads one row gets (blockDim.x of a row kernel)
COLUMN_TILE = 32  # columns per block of the column-sum kernels (blockDim.x)
COLUMN_ROWS = 8  # row lanes per block of the column-sum kernels (blockDim.y)

# Activation codes understood by the elementwise kernels.
ACTIVATION_CODES: dict[str, int] = {"linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3}

# Bit flags of the optimizer kernels.
SGD_FLAGS: dict[str, int] = {"weight_decay": 1, "momentum": 2, "first_step": 4, "nesterov": 8}
ADAM_FLAGS: dict[str, int] = {"weight_decay": 1, "amsgrad": 2}

_NAME_PATTERN = re.compile(r"\b(fastnn_\w+?)_##S\b")


def _defines() -> str:
    lines = [
        f"#define FASTNN_ELEMENTWISE_THREADS {ELEMENTWISE_THREADS}",
        f"#define FASTNN_ROW_MAX_THREADS {ROW_MAX_THREADS}",
        f"#define FASTNN_COLUMN_TILE {COLUMN_TILE}",
        f"#define FASTNN_COLUMN_ROWS {COLUMN_ROWS}",
        f"#define FASTNN_COLUMN_THREADS {COLUMN_TILE * COLUMN_ROWS}",
    ]
    lines += [f"#define FASTNN_ACT_{act.upper()} {code}" for act, code in ACTIVATION_CODES.items()]
    lines += [f"#define FASTNN_SGD_{name.upper()} {bit}" for name, bit in SGD_FLAGS.items()]
    lines += [f"#define FASTNN_ADAM_{name.upper()} {bit}" for name, bit in ADAM_FLAGS.items()]
    return "\n".join(lines) + "\n"


# Helpers shared by every family: typed math, NaN-propagating max, warp and row reductions.
_PRELUDE = r"""
namespace fastnn {

template <typename T> struct Math;

template <> struct Math<float> {
    static __device__ __forceinline__ float exp(float x) { return expf(x); }
    static __device__ __forceinline__ float log(float x) { return logf(x); }
    static __device__ __forceinline__ float tanh(float x) { return tanhf(x); }
    static __device__ __forceinline__ float sqrt(float x) { return sqrtf(x); }
    static __device__ __forceinline__ float neg_inf() {
        return __int_as_float(static_cast<int>(0xff800000u));
    }
    static __device__ __forceinline__ float nan() {
        return __int_as_float(static_cast<int>(0x7fc00000u));
    }
};

template <> struct Math<double> {
    static __device__ __forceinline__ double exp(double x) { return ::exp(x); }
    static __device__ __forceinline__ double log(double x) { return ::log(x); }
    static __device__ __forceinline__ double tanh(double x) { return ::tanh(x); }
    static __device__ __forceinline__ double sqrt(double x) { return ::sqrt(x); }
    static __device__ __forceinline__ double neg_inf() {
        return __longlong_as_double(static_cast<long long>(0xfff0000000000000ull));
    }
    static __device__ __forceinline__ double nan() {
        return __longlong_as_double(static_cast<long long>(0x7ff8000000000000ull));
    }
};

// max that propagates NaN like numpy.maximum and ndarray.max.
struct MaxOp {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const {
        return (a > b || a != a) ? a : b;
    }
};

struct SumOp {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const {
        return a + b;
    }
};

// Butterfly reduction over the 32 lanes of a warp; every lane gets the same result.
// All 32 lanes must call it (blockDim.x is a multiple of 32 and no thread returns early).
template <typename T, typename Op>
__device__ __forceinline__ T warp_all_reduce(T v, Op op) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    return v;
}

// Reduction over the blockDim.x threads of one row (row = threadIdx.y); every thread of
// the row gets the same result. All threads of the block must call it: it synchronises
// the block when a row spans several warps. scratch holds one value per warp (<= 32).
template <typename T, typename Op>
__device__ __forceinline__ T row_all_reduce(T v, Op op, T* scratch) {
    v = warp_all_reduce(v, op);
    const int warps_per_row = blockDim.x >> 5;
    if (warps_per_row == 1) {
        return v;
    }
    const int first = threadIdx.y * warps_per_row;
    __syncthreads();  // earlier readers of scratch are done
    if ((threadIdx.x & 31) == 0) {
        scratch[first + (threadIdx.x >> 5)] = v;
    }
    __syncthreads();
    T r = scratch[first];
    for (int w = 1; w < warps_per_row; ++w) {
        r = op(r, scratch[first + w]);
    }
    return r;
}

__device__ __forceinline__ long long grid_start() {
    return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long grid_stride() {
    return static_cast<long long>(gridDim.x) * blockDim.x;
}

}  // namespace fastnn
"""

_ACTIVATION = r"""
namespace fastnn {

template <typename T>
__device__ __forceinline__ T act_forward(int act, T x) {
    switch (act) {
        case FASTNN_ACT_RELU:
            return x < T(0) ? T(0) : x;  // NaN passes through, like numpy.maximum
        case FASTNN_ACT_SIGMOID:
            return (Math<T>::tanh(x * T(0.5)) + T(1)) * T(0.5);  // never overflows
        case FASTNN_ACT_TANH:
            return Math<T>::tanh(x);
        default:
            return x;
    }
}

// dL/dx from dL/dy and the activation's output y (none of these needs the input x).
template <typename T>
__device__ __forceinline__ T act_backward(int act, T dy, T y) {
    switch (act) {
        case FASTNN_ACT_RELU:
            return dy * (y > T(0) ? T(1) : T(0));
        case FASTNN_ACT_SIGMOID:
            return ((T(1) - y) * y) * dy;
        case FASTNN_ACT_TANH:
            return (T(1) - y * y) * dy;
        default:
            return dy;
    }
}

// Elementwise kernels read index i and write index i only, so outputs may alias inputs.
template <typename T>
__device__ __forceinline__ void activation_forward(const T* x, T* y, long long n, int act) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        y[i] = act_forward(act, x[i]);
    }
}

template <typename T>
__device__ __forceinline__ void activation_backward(
    const T* dy, const T* y, T* dx, long long n, int act) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        dx[i] = act_backward(act, dy[i], y[i]);
    }
}

// y = act(z + b), z: (n / cols, cols) row-major, b: (cols,).
template <typename T>
__device__ __forceinline__ void bias_activation(
    const T* z, const T* b, T* y, long long n, long long cols, int act) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        y[i] = act_forward(act, z[i] + b[i % cols]);
    }
}

// Column sums over a (rows, cols) row-major matrix, optionally of dz = dy * act'(y) which
// is written on the way. Block (COLUMN_TILE, COLUMN_ROWS) sums columns
// [blockIdx.x * COLUMN_TILE, +COLUMN_TILE) over rows [blockIdx.y * rows_per_chunk, +rows_per_chunk)
// and writes partial[blockIdx.y * cols + col].
template <typename T, bool BACKWARD>
__device__ __forceinline__ void column_sum_tile(
    const T* dy, const T* y, T* dz, T* partial, long long rows, long long cols,
    long long rows_per_chunk, int act) {
    __shared__ T tile[FASTNN_COLUMN_ROWS][FASTNN_COLUMN_TILE + 1];
    const long long col = static_cast<long long>(blockIdx.x) * FASTNN_COLUMN_TILE + threadIdx.x;
    const long long start = static_cast<long long>(blockIdx.y) * rows_per_chunk;
    const long long end = start + rows_per_chunk < rows ? start + rows_per_chunk : rows;
    T acc = T(0);
    if (col < cols) {
        for (long long r = start + threadIdx.y; r < end; r += FASTNN_COLUMN_ROWS) {
            const long long i = r * cols + col;
            T g = dy[i];
            if (BACKWARD) {
                g = act_backward(act, g, y[i]);
                dz[i] = g;
            }
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

#define FASTNN_ACTIVATION_KERNELS(T, S)                                                     \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_activation_forward_##S(const T* x, T* y, long long n, int act) {                     \
    fastnn::activation_forward<T>(x, y, n, act);                                            \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_activation_backward_##S(const T* dy, const T* y, T* dx, long long n, int act) {      \
    fastnn::activation_backward<T>(dy, y, dx, n, act);                                      \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_bias_activation_##S(                                                                 \
    const T* z, const T* b, T* y, long long n, long long cols, int act) {                   \
    fastnn::bias_activation<T>(z, b, y, n, cols, act);                                      \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_COLUMN_THREADS)                         \
fastnn_bias_activation_backward_##S(                                                        \
    const T* dy, const T* y, T* dz, T* partial, long long rows, long long cols,             \
    long long rows_per_chunk, int act) {                                                    \
    fastnn::column_sum_tile<T, true>(dy, y, dz, partial, rows, cols, rows_per_chunk, act);  \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_COLUMN_THREADS)                         \
fastnn_column_sum_##S(                                                                      \
    const T* x, T* partial, long long rows, long long cols, long long rows_per_chunk) {     \
    fastnn::column_sum_tile<T, false>(x, x, nullptr, partial, rows, cols, rows_per_chunk, 0); \
}
"""

_SOFTMAX = r"""
namespace fastnn {

// Row kernels: x is (rows, cols) row-major; block (tx, ty) handles ty rows with tx threads
// each (tx a multiple of 32). Every thread reads and writes only the columns j it owns
// (j = threadIdx.x, +blockDim.x, ...), so outputs may alias inputs. Threads of rows past
// the end stay in the block for the reductions but touch no memory.

__device__ __forceinline__ long long row_index() {
    return static_cast<long long>(blockIdx.x) * blockDim.y + threadIdx.y;
}

template <typename T>
__device__ __forceinline__ T row_max(const T* xr, long long cols, bool active, T* scratch) {
    T m = Math<T>::neg_inf();
    if (active) {
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            m = MaxOp()(m, xr[j]);
        }
    }
    return row_all_reduce(m, MaxOp(), scratch);
}

template <typename T>
__device__ __forceinline__ T row_sum_exp(
    const T* xr, long long cols, T m, bool active, T* scratch) {
    T s = T(0);
    if (active) {
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            s += Math<T>::exp(xr[j] - m);
        }
    }
    return row_all_reduce(s, SumOp(), scratch);
}

template <typename T, bool LOG>
__device__ __forceinline__ void softmax_rows(const T* x, T* y, long long rows, long long cols) {
    __shared__ T scratch[32];
    const long long row = row_index();
    const bool active = row < rows;
    const long long offset = (active ? row : 0) * cols;
    const T* xr = x + offset;
    T* yr = y + offset;
    const T m = row_max(xr, cols, active, scratch);
    const T s = row_sum_exp(xr, cols, m, active, scratch);
    if (!active) {
        return;
    }
    if (LOG) {
        const T log_s = Math<T>::log(s);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            yr[j] = (xr[j] - m) - log_s;
        }
    } else {
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            yr[j] = Math<T>::exp(xr[j] - m) / s;
        }
    }
}

// dx = y * (dy - sum(dy * y)) along each row.
template <typename T>
__device__ __forceinline__ void softmax_backward_rows(
    const T* dy, const T* y, T* dx, long long rows, long long cols) {
    __shared__ T scratch[32];
    const long long row = row_index();
    const bool active = row < rows;
    const long long offset = (active ? row : 0) * cols;
    T s = T(0);
    if (active) {
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            s += dy[offset + j] * y[offset + j];
        }
    }
    s = row_all_reduce(s, SumOp(), scratch);
    if (!active) {
        return;
    }
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        dx[offset + j] = (dy[offset + j] - s) * y[offset + j];
    }
}

// Fused softmax cross-entropy against probabilities: writes
// dx = (softmax(l) - t) * scale and row_loss[row] = sum(t * log_softmax(l)).
template <typename T>
__device__ __forceinline__ void softmax_xent_rows(
    const T* logits, const T* target, T* dx, T* row_loss, long long rows, long long cols,
    T scale) {
    __shared__ T scratch[32];
    const long long row = row_index();
    const bool active = row < rows;
    const long long offset = (active ? row : 0) * cols;
    const T* lr = logits + offset;
    const T m = row_max(lr, cols, active, scratch);
    const T s = row_sum_exp(lr, cols, m, active, scratch);
    const T log_s = Math<T>::log(s);
    T acc = T(0);
    if (active) {
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            const T shifted = lr[j] - m;
            const T t = target[offset + j];
            acc += t * (shifted - log_s);
            dx[offset + j] = (Math<T>::exp(shifted) / s - t) * scale;
        }
    }
    acc = row_all_reduce(acc, SumOp(), scratch);
    if (active && threadIdx.x == 0) {
        row_loss[row] = acc;
    }
}

// Fused softmax cross-entropy against integer labels: writes
// dx = (softmax(l) - onehot(label)) * scale and row_loss[row] = log_softmax(l)[label].
// Negative labels count from the end; a label outside [-cols, cols) gives a NaN row loss
// (the host then raises) and no one-hot subtraction.
template <typename T>
__device__ __forceinline__ void sparse_softmax_xent_rows(
    const T* logits, const long long* labels, T* dx, T* row_loss, long long rows,
    long long cols, T scale) {
    __shared__ T scratch[32];
    const long long row = row_index();
    const bool active = row < rows;
    const long long offset = (active ? row : 0) * cols;
    const T* lr = logits + offset;
    long long label = active ? labels[row] : 0;
    if (label < 0) {
        label += cols;
    }
    const bool valid = label >= 0 && label < cols;
    const T m = row_max(lr, cols, active, scratch);
    // The thread that owns column `label` contributes its shifted logit; reading it here,
    // before any thread writes dx, keeps the in-place case (dx is logits) correct.
    T s = T(0);
    T picked = T(0);
    if (active) {
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            const T shifted = lr[j] - m;
            s += Math<T>::exp(shifted);
            if (j == label) {
                picked = shifted;
            }
        }
    }
    s = row_all_reduce(s, SumOp(), scratch);
    picked = row_all_reduce(picked, SumOp(), scratch);
    if (!active) {
        return;
    }
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        const T p = Math<T>::exp(lr[j] - m) / s;
        dx[offset + j] = (j == label ? p - T(1) : p) * scale;
    }
    if (threadIdx.x == 0) {
        row_loss[row] = valid ? picked - Math<T>::log(s) : Math<T>::nan();
    }
}

}  // namespace fastnn

#define FASTNN_SOFTMAX_KERNELS(T, S)                                                        \
extern "C" __global__ void __launch_bounds__(FASTNN_ROW_MAX_THREADS)                        \
fastnn_softmax_##S(const T* x, T* y, long long rows, long long cols) {                      \
    fastnn::softmax_rows<T, false>(x, y, rows, cols);                                       \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ROW_MAX_THREADS)                        \
fastnn_log_softmax_##S(const T* x, T* y, long long rows, long long cols) {                  \
    fastnn::softmax_rows<T, true>(x, y, rows, cols);                                        \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ROW_MAX_THREADS)                        \
fastnn_softmax_backward_##S(                                                                \
    const T* dy, const T* y, T* dx, long long rows, long long cols) {                       \
    fastnn::softmax_backward_rows<T>(dy, y, dx, rows, cols);                                \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ROW_MAX_THREADS)                        \
fastnn_softmax_cross_entropy_##S(                                                           \
    const T* logits, const T* target, T* dx, T* row_loss, long long rows, long long cols,   \
    T scale) {                                                                              \
    fastnn::softmax_xent_rows<T>(logits, target, dx, row_loss, rows, cols, scale);          \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ROW_MAX_THREADS)                        \
fastnn_sparse_softmax_cross_entropy_##S(                                                    \
    const T* logits, const long long* labels, T* dx, T* row_loss, long long rows,           \
    long long cols, T scale) {                                                              \
    fastnn::sparse_softmax_xent_rows<T>(logits, labels, dx, row_loss, rows, cols, scale);   \
}
"""

_OPTIMIZER = r"""
namespace fastnn {

// torch.optim.SGD, one pass per element. buf is unused (may be any pointer) without
// momentum. Scalars arrive already rounded to T, as the reference's array arithmetic does.
template <typename T>
__device__ __forceinline__ void sgd_update(
    T* param, const T* grad, T* buf, long long n, T lr, T momentum, T one_minus_dampening,
    T weight_decay, T lr_momentum, int flags) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        T p = param[i];
        T g = grad[i];
        if (flags & FASTNN_SGD_WEIGHT_DECAY) {
            g = p * weight_decay + g;
        }
        if (flags & FASTNN_SGD_MOMENTUM) {
            T b;
            if (flags & FASTNN_SGD_FIRST_STEP) {
                b = g;
            } else {
                b = buf[i] * momentum + g * one_minus_dampening;
            }
            buf[i] = b;
            if (flags & FASTNN_SGD_NESTEROV) {
                p = p - g * lr;
                param[i] = p - b * lr_momentum;
                continue;
            }
            g = b;
        }
        param[i] = p - g * lr;
    }
}

// torch.optim.Adam (eps outside the square root), one pass per element. vmax is unused
// (may be any pointer) without amsgrad.
template <typename T>
__device__ __forceinline__ void adam_update(
    T* param, const T* grad, T* m, T* v, T* vmax, long long n, T step_size, T beta1,
    T beta2, T one_minus_beta2, T inv_sqrt_bias2, T eps, T weight_decay, int flags) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const T p = param[i];
        T g = grad[i];
        if (flags & FASTNN_ADAM_WEIGHT_DECAY) {
            g = p * weight_decay + g;
        }
        const T mi = (m[i] - g) * beta1 + g;
        m[i] = mi;
        const T vi = v[i] * beta2 + (g * g) * one_minus_beta2;
        v[i] = vi;
        T second = vi;
        if (flags & FASTNN_ADAM_AMSGRAD) {
            second = MaxOp()(vmax[i], vi);
            vmax[i] = second;
        }
        const T denom = Math<T>::sqrt(second) * inv_sqrt_bias2 + eps;
        param[i] = p - (mi / denom) * step_size;
    }
}

}  // namespace fastnn

#define FASTNN_OPTIMIZER_KERNELS(T, S)                                                      \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_sgd_update_##S(                                                                      \
    T* param, const T* grad, T* buf, long long n, T lr, T momentum, T one_minus_dampening,  \
    T weight_decay, T lr_momentum, int flags) {                                             \
    fastnn::sgd_update<T>(param, grad, buf, n, lr, momentum, one_minus_dampening,           \
                          weight_decay, lr_momentum, flags);                                \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_adam_update_##S(                                                                     \
    T* param, const T* grad, T* m, T* v, T* vmax, long long n, T step_size, T beta1,        \
    T beta2, T one_minus_beta2, T inv_sqrt_bias2, T eps, T weight_decay, int flags) {       \
    fastnn::adam_update<T>(param, grad, m, v, vmax, n, step_size, beta1, beta2,             \
                           one_minus_beta2, inv_sqrt_bias2, eps, weight_decay, flags);      \
}
"""


@dataclass(frozen=True)
class KernelSource:
    """One CUDA module: a family of kernels sharing a source text.

    Attributes:
        name: family name (``"activation"``, ``"softmax"``, ``"optimizer"``).
        kernels: base kernel names (``"fastnn_softmax"``); the compiled entry points are
            ``<base>_f32`` and ``<base>_f64``.
        body: CUDA C++ text defining the templates and the ``FASTNN_<NAME>_KERNELS``
            wrapper macro.
    """

    name: str
    kernels: tuple[str, ...]
    body: str

    @property
    def macro(self) -> str:
        """The wrapper macro that instantiates this family for one element type."""
        return f"FASTNN_{self.name.upper()}_KERNELS"

    def declared_kernels(self) -> tuple[str, ...]:
        """Base names of the ``extern "C"`` wrappers written in :attr:`body`, in order."""
        return tuple(dict.fromkeys(_NAME_PATTERN.findall(self.body)))

    def kernel_name(self, base: str, dtype: object) -> str:
        """Entry-point name of kernel ``base`` for ``dtype`` (``fastnn_softmax_f32``)."""
        if base not in self.kernels:
            raise KeyError(f"kernel {base!r} is not in the {self.name!r} CUDA source")
        return f"{base}_{_dtype_info(dtype)[1]}"

    def kernel_names(self, dtype: object) -> tuple[str, ...]:
        """Every entry-point name of this family for ``dtype``."""
        return tuple(self.kernel_name(base, dtype) for base in self.kernels)

    def code(self, dtype: object) -> str:
        """The complete, self-contained CUDA C++ source of this family for ``dtype``."""
        ctype, suffix = _dtype_info(dtype)
        return (
            f"// fastnn CUDA kernels, family {self.name!r}, element type {ctype}.\n"
            f"// Generated by fastnn/kernels/cuda/sources.py.\n"
            + _defines()
            + _PRELUDE
            + self.body
            + f"\n{self.macro}({ctype}, {suffix})\n"
        )


def _dtype_info(dtype: object) -> tuple[str, str]:
    name = np.dtype(dtype).name
    try:
        return DTYPES[name]
    except KeyError:
        valid = ", ".join(DTYPES)
        raise ValueError(
            f"CUDA kernels exist for dtypes {valid}; received dtype {name}"
        ) from None


# Every CUDA source of fastnn; the compile test iterates over this. Family modules
# elsewhere in this package add theirs with register_source() when imported.
SOURCES: dict[str, KernelSource] = {}


def register_source(source: KernelSource) -> KernelSource:
    """Add a kernel family to :data:`SOURCES` (so the compile test builds it) and return it.

    Raises:
        ValueError: another family has the same name or a kernel of the same name, or the
            family's text defines other kernels than it declares.
    """
    existing = SOURCES.get(source.name)
    if existing is source:
        return source
    if existing is not None:
        raise ValueError(f"a CUDA kernel family named {source.name!r} is already registered")
    written = source.declared_kernels()
    if set(written) != set(source.kernels):
        raise ValueError(
            f"CUDA family {source.name!r} declares kernels {list(source.kernels)} but its "
            f"text defines {list(written)}"
        )
    taken = set(source.kernels) & set(all_kernel_names())
    if taken:
        raise ValueError(f"CUDA family {source.name!r}: kernel names taken: {sorted(taken)}")
    SOURCES[source.name] = source
    return source


ACTIVATION = KernelSource(
    name="activation",
    kernels=(
        "fastnn_activation_forward",
        "fastnn_activation_backward",
        "fastnn_bias_activation",
        "fastnn_bias_activation_backward",
        "fastnn_column_sum",
    ),
    body=_ACTIVATION,
)

SOFTMAX = KernelSource(
    name="softmax",
    kernels=(
        "fastnn_softmax",
        "fastnn_log_softmax",
        "fastnn_softmax_backward",
        "fastnn_softmax_cross_entropy",
        "fastnn_sparse_softmax_cross_entropy",
    ),
    body=_SOFTMAX,
)

OPTIMIZER = KernelSource(
    name="optimizer",
    kernels=("fastnn_sgd_update", "fastnn_adam_update"),
    body=_OPTIMIZER,
)


def all_kernel_names() -> list[str]:
    """Every base kernel name of every registered family."""
    return [base for src in SOURCES.values() for base in src.kernels]


for _family in (ACTIVATION, SOFTMAX, OPTIMIZER):
    register_source(_family)
