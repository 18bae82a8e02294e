"""CUDA C++ source of the fused optimizer updates beyond SGD and Adam, and of gradient clipping.

One family, ``optimizer_extra``, in the format of :mod:`fastnn.kernels.cuda.sources` (a
``template <typename T>`` device function per kernel, ``extern "C"`` wrappers
``fastnn_<kernel>_f32`` / ``_f64`` declared by the ``FASTNN_OPTIMIZER_EXTRA_KERNELS`` macro).
Importing this module adds the family to :data:`fastnn.kernels.cuda.sources.SOURCES`, so the
compile test (``tests/test_cuda_compile.py``) builds it for every architecture and dtype.
Text only: needs neither CuPy nor a GPU.

Every kernel is a grid-stride loop reading index ``i`` of each array and writing index ``i``
of the parameter and its state: one pass over memory per parameter. Scalars arrive rounded to
``T`` on the host (step-dependent ones such as bias corrections computed there in float64), as
the reference's array arithmetic with Python scalars does.
"""

from __future__ import annotations

from fastnn.kernels.cuda.sources import SOURCES, KernelSource

# Bit flags of the kernels; written into the source as #defines so host and device agree.
RMSPROP_FLAGS: dict[str, int] = {"weight_decay": 1, "centered": 2, "momentum": 4}
WEIGHT_DECAY_FLAG = 1  # adagrad, adadelta, adamax, nadam: L2 term added to the gradient
ADAMW_FLAGS: dict[str, int] = {"decay": 1, "amsgrad": 2}
NADAM_FLAGS: dict[str, int] = {"weight_decay": 1, "decoupled": 2}
CLIP_FLAGS: dict[str, int] = {"scale": 1, "clip": 2}


def _defines() -> str:
    lines = [f"#define FASTNN_OPTX_WEIGHT_DECAY {WEIGHT_DECAY_FLAG}"]
    for prefix, table in (
        ("RMSPROP", RMSPROP_FLAGS),
        ("ADAMW", ADAMW_FLAGS),
        ("NADAM", NADAM_FLAGS),
        ("CLIP", CLIP_FLAGS),
    ):
        lines += [f"#define FASTNN_{prefix}_{name.upper()} {bit}" for name, bit in table.items()]
    return "\n".join(lines) + "\n"


_BODY = _defines() + r"""
namespace fastnn {

template <typename T>
__device__ __forceinline__ T with_l2(T g, T p, T weight_decay, int flags) {
    return (flags & FASTNN_OPTX_WEIGHT_DECAY) ? p * weight_decay + g : g;
}

// torch.optim.Adagrad: accum += g^2; p -= clr * g / (sqrt(accum) + eps).
template <typename T>
__device__ __forceinline__ void adagrad_update(
    T* param, const T* grad, T* accum, long long n, T clr, T eps, T weight_decay, int flags) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const T p = param[i];
        const T g = with_l2(grad[i], p, weight_decay, flags);
        const T a = accum[i] + g * g;
        accum[i] = a;
        param[i] = p - (g / (Math<T>::sqrt(a) + eps)) * clr;
    }
}

// torch.optim.RMSprop (rho is torch's alpha). grad_avg and buf are unused (may be any
// pointer) without centering and momentum.
template <typename T>
__device__ __forceinline__ void rmsprop_update(
    T* param, const T* grad, T* square_avg, T* grad_avg, T* buf, long long n, T lr, T rho,
    T one_minus_rho, T eps, T weight_decay, T momentum, int flags) {
    // Not unrolled: with five arrays and seven scalars an unrolled loop spills registers.
    #pragma unroll 1
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const T p = param[i];
        T g = grad[i];
        if (flags & FASTNN_RMSPROP_WEIGHT_DECAY) {
            g = p * weight_decay + g;
        }
        const T s = square_avg[i] * rho + (g * g) * one_minus_rho;
        square_avg[i] = s;
        T var = s;
        if (flags & FASTNN_RMSPROP_CENTERED) {
            const T a = (grad_avg[i] - g) * rho + g;
            grad_avg[i] = a;
            var = s - a * a;
        }
        T step = g / (Math<T>::sqrt(var) + eps);
        if (flags & FASTNN_RMSPROP_MOMENTUM) {
            step = buf[i] * momentum + step;
            buf[i] = step;
        }
        param[i] = p - step * lr;
    }
}

// torch.optim.Adadelta: eps inside both square roots.
template <typename T>
__device__ __forceinline__ void adadelta_update(
    T* param, const T* grad, T* square_avg, T* acc_delta, long long n, T lr, T rho,
    T one_minus_rho, T eps, T weight_decay, int flags) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const T p = param[i];
        const T g = with_l2(grad[i], p, weight_decay, flags);
        const T s = square_avg[i] * rho + (g * g) * one_minus_rho;
        square_avg[i] = s;
        const T acc = acc_delta[i];
        const T d = g / Math<T>::sqrt(s + eps) * Math<T>::sqrt(acc + eps);
        acc_delta[i] = acc * rho + (d * d) * one_minus_rho;
        param[i] = p - d * lr;
    }
}

// torch.optim.AdamW: p *= decay (= 1 - lr wd), then Adam with eps outside the root.
// vmax is unused (may be any pointer) without amsgrad.
template <typename T>
__device__ __forceinline__ void adamw_update(
    T* param, const T* grad, T* m, T* v, T* vmax, long long n, T decay, T step_size, T beta1,
    T beta2, T one_minus_beta2, T inv_sqrt_bias2, T eps, int flags) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        T p = param[i];
        if (flags & FASTNN_ADAMW_DECAY) {
            p = p * decay;
        }
        const T g = grad[i];
        const T mi = (m[i] - g) * beta1 + g;
        m[i] = mi;
        T vi = v[i] * beta2 + (g * g) * one_minus_beta2;
        v[i] = vi;
        if (flags & FASTNN_ADAMW_AMSGRAD) {
            vi = MaxOp()(vmax[i], vi);
            vmax[i] = vi;
        }
        param[i] = p - (mi / (Math<T>::sqrt(vi) * inv_sqrt_bias2 + eps)) * step_size;
    }
}

// torch.optim.Adamax: u = max(b2 u, |g| + eps), NaN-propagating; p -= clr m / u.
template <typename T>
__device__ __forceinline__ void adamax_update(
    T* param, const T* grad, T* m, T* u, long long n, T clr, T beta1, T beta2, T eps,
    T weight_decay, int flags) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        const T p = param[i];
        const T g = with_l2(grad[i], p, weight_decay, flags);
        const T mi = (m[i] - g) * beta1 + g;
        m[i] = mi;
        const T abs_g = g < T(0) ? -g : g;
        const T ui = MaxOp()(u[i] * beta2, abs_g + eps);
        u[i] = ui;
        param[i] = p - (mi / ui) * clr;
    }
}

// torch.optim.NAdam: denom = sqrt(v / bias2) + eps; p -= c1 g / denom + c2 m / denom, with
// decoupled decay p *= decay first, or an L2 term in g.
template <typename T>
__device__ __forceinline__ void nadam_update(
    T* param, const T* grad, T* m, T* v, long long n, T decay, T c1, T c2, T bias2, T beta1,
    T beta2, T one_minus_beta2, T eps, T weight_decay, int flags) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        T p = param[i];
        T g = grad[i];
        if (flags & FASTNN_NADAM_DECOUPLED) {
            p = p * decay;
        } else if (flags & FASTNN_NADAM_WEIGHT_DECAY) {
            g = p * weight_decay + g;
        }
        const T mi = (m[i] - g) * beta1 + g;
        m[i] = mi;
        const T vi = v[i] * beta2 + (g * g) * one_minus_beta2;
        v[i] = vi;
        const T denom = Math<T>::sqrt(vi / bias2) + eps;
        param[i] = (p - (g / denom) * c1) - (mi / denom) * c2;
    }
}

// out = clip(grad * scale, -clip, clip); NaN passes through, as with numpy.clip.
template <typename T>
__device__ __forceinline__ void clip_gradient(
    const T* grad, T* out, long long n, T scale, T clip, int flags) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        T x = grad[i];
        if (flags & FASTNN_CLIP_SCALE) {
            x = x * scale;
        }
        if (flags & FASTNN_CLIP_CLIP) {
            x = x > clip ? clip : (x < -clip ? -clip : x);
        }
        out[i] = x;
    }
}

}  // namespace fastnn

#define FASTNN_OPTIMIZER_EXTRA_KERNELS(T, S)                                                \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_adagrad_update_##S(                                                                  \
    T* param, const T* grad, T* accum, long long n, T clr, T eps, T weight_decay,           \
    int flags) {                                                                            \
    fastnn::adagrad_update<T>(param, grad, accum, n, clr, eps, weight_decay, flags);        \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_rmsprop_update_##S(                                                                  \
    T* param, const T* grad, T* square_avg, T* grad_avg, T* buf, long long n, T lr, T rho,  \
    T one_minus_rho, T eps, T weight_decay, T momentum, int flags) {                        \
    fastnn::rmsprop_update<T>(param, grad, square_avg, grad_avg, buf, n, lr, rho,           \
                              one_minus_rho, eps, weight_decay, momentum, flags);           \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_adadelta_update_##S(                                                                 \
    T* param, const T* grad, T* square_avg, T* acc_delta, long long n, T lr, T rho,         \
    T one_minus_rho, T eps, T weight_decay, int flags) {                                    \
    fastnn::adadelta_update<T>(param, grad, square_avg, acc_delta, n, lr, rho,              \
                               one_minus_rho, eps, weight_decay, flags);                    \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_adamw_update_##S(                                                                    \
    T* param, const T* grad, T* m, T* v, T* vmax, long long n, T decay, T step_size,        \
    T beta1, T beta2, T one_minus_beta2, T inv_sqrt_bias2, T eps, int flags) {              \
    fastnn::adamw_update<T>(param, grad, m, v, vmax, n, decay, step_size, beta1, beta2,     \
                            one_minus_beta2, inv_sqrt_bias2, eps, flags);                   \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_adamax_update_##S(                                                                   \
    T* param, const T* grad, T* m, T* u, long long n, T clr, T beta1, T beta2, T eps,       \
    T weight_decay, int flags) {                                                            \
    fastnn::adamax_update<T>(param, grad, m, u, n, clr, beta1, beta2, eps, weight_decay,    \
                             flags);                                                        \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_nadam_update_##S(                                                                    \
    T* param, const T* grad, T* m, T* v, long long n, T decay, T c1, T c2, T bias2,         \
    T beta1, T beta2, T one_minus_beta2, T eps, T weight_decay, int flags) {                \
    fastnn::nadam_update<T>(param, grad, m, v, n, decay, c1, c2, bias2, beta1, beta2,       \
                            one_minus_beta2, eps, weight_decay, flags);                     \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_clip_gradient_##S(                                                                   \
    const T* grad, T* out, long long n, T scale, T clip, int flags) {                       \
    fastnn::clip_gradient<T>(grad, out, n, scale, clip, flags);                             \
}
"""

OPTIMIZER_EXTRA = KernelSource(
    name="optimizer_extra",
    kernels=(
        "fastnn_adagrad_update",
        "fastnn_rmsprop_update",
        "fastnn_adadelta_update",
        "fastnn_adamw_update",
        "fastnn_adamax_update",
        "fastnn_nadam_update",
        "fastnn_clip_gradient",
    ),
    body=_BODY,
)

# Registered with the other families: the compile test and all_kernel_names() iterate SOURCES.
SOURCES.setdefault(OPTIMIZER_EXTRA.name, OPTIMIZER_EXTRA)
