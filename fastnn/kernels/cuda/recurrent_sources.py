"""CUDA C++ source of the recurrent kernels: fused LSTM/GRU cell steps and embedding scatter-add.

One family, ``recurrent``, in the format of :mod:`fastnn.kernels.cuda.sources` (a
``template <typename T>`` device function per kernel, ``extern "C"`` wrappers
``fastnn_<kernel>_f32`` / ``_f64`` declared by the ``FASTNN_RECURRENT_KERNELS`` macro).
Importing this module adds the family to :data:`fastnn.kernels.cuda.sources.SOURCES`, so the
compile test (``tests/test_cuda_compile.py``) builds it for every architecture and dtype.
Text only: needs neither CuPy nor a GPU.

The cell kernels are grid-stride loops over the ``N * H`` units of one timestep: each thread
reads the gate pre-activations of its unit (``4`` or ``3`` columns of a row) and writes the
gates, the new states and, backwards, all gate gradients; the recurrent matrix product stays
on cuBLAS. Gate activations are the codes of :data:`sources.ACTIVATION_CODES` (``linear``,
``relu``, ``sigmoid``, ``tanh``). The embedding backward adds ``dout`` rows into a zeroed
``dW`` with ``atomicAdd`` (float64 atomics need sm_60 or newer), so repeated ids sum.
"""

from __future__ import annotations

from fastnn.kernels.cuda.sources import SOURCES, KernelSource

_BODY = r"""
namespace fastnn {

template <typename T>
__device__ __forceinline__ T rnn_act(int code, T v) {
    if (code == FASTNN_ACT_SIGMOID) {
        return T(1) / (T(1) + Math<T>::exp(-v));
    }
    if (code == FASTNN_ACT_TANH) {
        return Math<T>::tanh(v);
    }
    if (code == FASTNN_ACT_RELU) {
        return v > T(0) ? v : T(0);
    }
    return v;
}

// Derivative of the activation from its output y.
template <typename T>
__device__ __forceinline__ T rnn_act_grad(int code, T y) {
    if (code == FASTNN_ACT_SIGMOID) {
        return (T(1) - y) * y;
    }
    if (code == FASTNN_ACT_TANH) {
        return T(1) - y * y;
    }
    if (code == FASTNN_ACT_RELU) {
        return y > T(0) ? T(1) : T(0);
    }
    return T(1);
}

// LSTM step, gates [i, f, g, o] in blocks of H columns of rows of 4H.
template <typename T>
__device__ __forceinline__ void lstm_cell_forward(
    const T* xz, const T* hz, const T* c_prev, T* gates, T* c, T* h, T* act_c,
    long long n, long long units, int act, int ract) {
    for (long long k = grid_start(); k < n * units; k += grid_stride()) {
        const long long row = k / units;
        const long long j = k - row * units;
        const long long g0 = row * 4 * units + j;
        const T i = rnn_act(ract, xz[g0] + hz[g0]);
        const T f = rnn_act(ract, xz[g0 + units] + hz[g0 + units]);
        const T g = rnn_act(act, xz[g0 + 2 * units] + hz[g0 + 2 * units]);
        const T o = rnn_act(ract, xz[g0 + 3 * units] + hz[g0 + 3 * units]);
        const T cn = f * c_prev[k] + i * g;
        const T tc = rnn_act(act, cn);
        gates[g0] = i;
        gates[g0 + units] = f;
        gates[g0 + 2 * units] = g;
        gates[g0 + 3 * units] = o;
        c[k] = cn;
        act_c[k] = tc;
        h[k] = o * tc;
    }
}

// dc_prev may be dc (each thread reads its element before writing it).
template <typename T>
__device__ __forceinline__ void lstm_cell_backward(
    const T* dh, const T* dc, const T* gates, const T* c_prev, const T* act_c, T* dz,
    T* dc_prev, long long n, long long units, int act, int ract) {
    for (long long k = grid_start(); k < n * units; k += grid_stride()) {
        const long long row = k / units;
        const long long j = k - row * units;
        const long long g0 = row * 4 * units + j;
        const T i = gates[g0];
        const T f = gates[g0 + units];
        const T g = gates[g0 + 2 * units];
        const T o = gates[g0 + 3 * units];
        const T tc = act_c[k];
        const T dhv = dh[k];
        const T dct = dhv * o * rnn_act_grad(act, tc) + dc[k];
        dz[g0] = dct * g * rnn_act_grad(ract, i);
        dz[g0 + units] = dct * c_prev[k] * rnn_act_grad(ract, f);
        dz[g0 + 2 * units] = dct * i * rnn_act_grad(act, g);
        dz[g0 + 3 * units] = dhv * tc * rnn_act_grad(ract, o);
        dc_prev[k] = dct * f;
    }
}

// GRU step (reset_after), gates [z, r, n] in blocks of H columns of rows of 3H.
template <typename T>
__device__ __forceinline__ void gru_cell_forward(
    const T* xz, const T* hz, const T* h_prev, T* gates, T* h,
    long long n, long long units, int act, int ract) {
    for (long long k = grid_start(); k < n * units; k += grid_stride()) {
        const long long row = k / units;
        const long long j = k - row * units;
        const long long g0 = row * 3 * units + j;
        const T z = rnn_act(ract, xz[g0] + hz[g0]);
        const T r = rnn_act(ract, xz[g0 + units] + hz[g0 + units]);
        const T nn = rnn_act(act, xz[g0 + 2 * units] + r * hz[g0 + 2 * units]);
        gates[g0] = z;
        gates[g0 + units] = r;
        gates[g0 + 2 * units] = nn;
        h[k] = nn + z * (h_prev[k] - nn);
    }
}

template <typename T>
__device__ __forceinline__ void gru_cell_backward(
    const T* dh, const T* gates, const T* h_prev, const T* hz, T* dxz, T* dhz, T* dh_prev,
    long long n, long long units, int act, int ract) {
    for (long long k = grid_start(); k < n * units; k += grid_stride()) {
        const long long row = k / units;
        const long long j = k - row * units;
        const long long g0 = row * 3 * units + j;
        const T z = gates[g0];
        const T r = gates[g0 + units];
        const T nn = gates[g0 + 2 * units];
        const T dhv = dh[k];
        const T dn = dhv * (T(1) - z) * rnn_act_grad(act, nn);
        const T dzz = dhv * (h_prev[k] - nn) * rnn_act_grad(ract, z);
        const T dr = dn * hz[g0 + 2 * units] * rnn_act_grad(ract, r);
        dxz[g0] = dzz;
        dxz[g0 + units] = dr;
        dxz[g0 + 2 * units] = dn;
        dhz[g0] = dzz;
        dhz[g0 + units] = dr;
        dhz[g0 + 2 * units] = dn * r;
        dh_prev[k] = dhv * z;
    }
}

// dW[ids[m], :] += dout[m, :] for a zeroed dW; atomics make repeated ids add up.
template <typename T>
__device__ __forceinline__ void embedding_backward(
    const long long* ids, const T* dout, T* dW, long long m, long long cols) {
    for (long long k = grid_start(); k < m * cols; k += grid_stride()) {
        const long long row = k / cols;
        const long long j = k - row * cols;
        atomicAdd(dW + ids[row] * cols + j, dout[k]);
    }
}

}  // namespace fastnn

#define FASTNN_RECURRENT_KERNELS(T, S)                                                      \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_lstm_cell_forward_##S(                                                               \
    const T* xz, const T* hz, const T* c_prev, T* gates, T* c, T* h, T* act_c,              \
    long long n, long long units, int act, int ract) {                                      \
    fastnn::lstm_cell_forward<T>(xz, hz, c_prev, gates, c, h, act_c, n, units, act, ract);  \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_lstm_cell_backward_##S(                                                              \
    const T* dh, const T* dc, const T* gates, const T* c_prev, const T* act_c, T* dz,       \
    T* dc_prev, long long n, long long units, int act, int ract) {                          \
    fastnn::lstm_cell_backward<T>(dh, dc, gates, c_prev, act_c, dz, dc_prev, n, units,      \
                                  act, ract);                                               \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_gru_cell_forward_##S(                                                                \
    const T* xz, const T* hz, const T* h_prev, T* gates, T* h,                              \
    long long n, long long units, int act, int ract) {                                      \
    fastnn::gru_cell_forward<T>(xz, hz, h_prev, gates, h, n, units, act, ract);             \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_gru_cell_backward_##S(                                                               \
    const T* dh, const T* gates, const T* h_prev, const T* hz, T* dxz, T* dhz, T* dh_prev,  \
    long long n, long long units, int act, int ract) {                                      \
    fastnn::gru_cell_backward<T>(dh, gates, h_prev, hz, dxz, dhz, dh_prev, n, units,        \
                                 act, ract);                                                \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_ELEMENTWISE_THREADS)                    \
fastnn_embedding_backward_##S(                                                              \
    const long long* ids, const T* dout, T* dW, long long m, long long cols) {              \
    fastnn::embedding_backward<T>(ids, dout, dW, m, cols);                                  \
}
"""

RECURRENT = KernelSource(
    name="recurrent",
    kernels=(
        "fastnn_lstm_cell_forward",
        "fastnn_lstm_cell_backward",
        "fastnn_gru_cell_forward",
        "fastnn_gru_cell_backward",
        "fastnn_embedding_backward",
    ),
    body=_BODY,
)

# Registered with the other families: the compile test and all_kernel_names() iterate SOURCES.
SOURCES.setdefault(RECURRENT.name, RECURRENT)
