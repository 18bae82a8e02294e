"""CUDA C++ source of the convolution and pooling kernels (family ``"conv"``).

Text only, like :mod:`fastnn.kernels.cuda.sources`, into whose ``SOURCES`` :data:`CONV` is
registered on import (so the compile test builds it for every architecture and dtype): no
CuPy, no GPU. Layouts and rules are those of :mod:`fastnn.kernels.reference.conv`: columns of shape
``(C * kh * kw, N * OH * OW)``, first maximum wins ties, NaN counts as the maximum, average
pooling divides by the number of in-image window elements.

Every kernel is a grid-stride loop over its output elements with no atomics: ``col2im`` and
the pooling backwards *gather* (each input pixel sums the window entries that read it), so
results are deterministic and match the reference bit for bit up to summation order.
"""

from __future__ import annotations

from fastnn.kernels.cuda.sources import KernelSource, register_source

#: Threads per block of every conv/pool kernel (grid-stride loops).
CONV_THREADS = 256

_CONV_BODY = r"""
namespace fastnn {

// Geometry shared by every kernel of this family (ints, as passed by the host).
#define FASTNN_CONV_GEOMETRY int n, int c, int h, int w, int kh, int kw, int sh, int sw, \
    int pt, int pl, int dh, int dw, int oh, int ow
#define FASTNN_CONV_ARGS n, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow

// cols[(ci * kh + i) * kw + j][(ni * oh + a) * ow + b]
//     = x[ni][ci][a * sh + i * dh - pt][b * sw + j * dw - pl]
template <typename T>
__device__ __forceinline__ void im2col(const T* x, T* cols, FASTNN_CONV_GEOMETRY) {
    const long long plane = static_cast<long long>(oh) * ow;
    const long long ncols = plane * n;
    const long long total = ncols * c * kh * kw;
    for (long long idx = grid_start(); idx < total; idx += grid_stride()) {
        const long long r = idx / ncols;
        const long long col = idx - r * ncols;
        const int ni = static_cast<int>(col / plane);
        const int rem = static_cast<int>(col - ni * plane);
        const int a = rem / ow;
        const int b = rem - a * ow;
        const int ci = static_cast<int>(r / (kh * kw));
        const int k = static_cast<int>(r - static_cast<long long>(ci) * kh * kw);
        const int i = k / kw;
        const int j = k - i * kw;
        const int ih = a * sh + i * dh - pt;
        const int iw = b * sw + j * dw - pl;
        T v = T(0);
        if (ih >= 0 && ih < h && iw >= 0 && iw < w) {
            v = x[((static_cast<long long>(ni) * c + ci) * h + ih) * w + iw];
        }
        cols[idx] = v;
    }
}

// The adjoint of im2col: every pixel gathers the column entries read from it.
template <typename T>
__device__ __forceinline__ void col2im(const T* cols, T* dx, FASTNN_CONV_GEOMETRY) {
    const long long plane = static_cast<long long>(oh) * ow;
    const long long ncols = plane * n;
    const long long total = static_cast<long long>(n) * c * h * w;
    for (long long idx = grid_start(); idx < total; idx += grid_stride()) {
        const int iw = static_cast<int>(idx % w);
        const int ih = static_cast<int>((idx / w) % h);
        const int ci = static_cast<int>((idx / (static_cast<long long>(w) * h)) % c);
        const int ni = static_cast<int>(idx / (static_cast<long long>(w) * h * c));
        T acc = T(0);
        for (int i = 0; i < kh; ++i) {
            const int ta = ih + pt - i * dh;
            if (ta < 0 || ta % sh != 0) continue;
            const int a = ta / sh;
            if (a >= oh) continue;
            for (int j = 0; j < kw; ++j) {
                const int tb = iw + pl - j * dw;
                if (tb < 0 || tb % sw != 0) continue;
                const int b = tb / sw;
                if (b >= ow) continue;
                const long long r = (static_cast<long long>(ci) * kh + i) * kw + j;
                acc += cols[r * ncols + ni * plane + static_cast<long long>(a) * ow + b];
            }
        }
        dx[idx] = acc;
    }
}

// y[ni][f][p] = rows[f][ni * plane + p] (+ bias[f])
template <typename T>
__device__ __forceinline__ void rows_to_nchw(
    const T* rows, const T* bias, T* y, long long n, long long f, long long plane,
    int has_bias) {
    const long long total = n * f * plane;
    for (long long idx = grid_start(); idx < total; idx += grid_stride()) {
        const long long p = idx % plane;
        const long long fi = (idx / plane) % f;
        const long long ni = idx / (plane * f);
        T v = rows[fi * (n * plane) + ni * plane + p];
        if (has_bias) {
            v += bias[fi];
        }
        y[idx] = v;
    }
}

// rows[f][ni * plane + p] = dy[ni][f][p]
template <typename T>
__device__ __forceinline__ void nchw_to_rows(
    const T* dy, T* rows, long long n, long long f, long long plane) {
    const long long total = n * f * plane;
    for (long long idx = grid_start(); idx < total; idx += grid_stride()) {
        const long long p = idx % plane;
        const long long ni = idx / (plane * f);
        const long long fi = (idx / plane) % f;
        rows[fi * (n * plane) + ni * plane + p] = dy[idx];
    }
}

// Output element index -> (plane index ni * c + ci, a, b).
__device__ __forceinline__ void pool_position(
    long long idx, int oh, int ow, long long* nc, int* a, int* b) {
    *b = static_cast<int>(idx % ow);
    *a = static_cast<int>((idx / ow) % oh);
    *nc = idx / (static_cast<long long>(ow) * oh);
}

template <typename T>
__device__ __forceinline__ void maxpool_forward(
    const T* x, T* y, int* arg, FASTNN_CONV_GEOMETRY) {
    const long long total = static_cast<long long>(n) * c * oh * ow;
    for (long long idx = grid_start(); idx < total; idx += grid_stride()) {
        long long nc;
        int a, b;
        pool_position(idx, oh, ow, &nc, &a, &b);
        const T* xp = x + nc * h * w;
        T best = Math<T>::neg_inf();
        int best_k = -1;
        for (int i = 0; i < kh; ++i) {
            const int ih = a * sh + i - pt;
            if (ih < 0 || ih >= h) continue;
            for (int j = 0; j < kw; ++j) {
                const int iw = b * sw + j - pl;
                if (iw < 0 || iw >= w) continue;
                const T v = xp[ih * w + iw];
                if (best_k < 0 || v > best || (v != v && best == best)) {
                    best = v;
                    best_k = i * kw + j;
                }
            }
        }
        y[idx] = best;
        arg[idx] = best_k;
    }
}

// Each input pixel gathers dy of the windows whose argmax is that pixel.
template <typename T>
__device__ __forceinline__ void maxpool_backward(
    const T* dy, const int* arg, T* dx, FASTNN_CONV_GEOMETRY) {
    const long long total = static_cast<long long>(n) * c * h * w;
    for (long long idx = grid_start(); idx < total; idx += grid_stride()) {
        const int iw = static_cast<int>(idx % w);
        const int ih = static_cast<int>((idx / w) % h);
        const long long nc = idx / (static_cast<long long>(w) * h);
        const long long base = nc * oh * ow;
        T acc = T(0);
        for (int i = 0; i < kh; ++i) {
            const int ta = ih + pt - i;
            if (ta < 0 || ta % sh != 0) continue;
            const int a = ta / sh;
            if (a >= oh) continue;
            for (int j = 0; j < kw; ++j) {
                const int tb = iw + pl - j;
                if (tb < 0 || tb % sw != 0) continue;
                const int b = tb / sw;
                if (b >= ow) continue;
                const long long o = base + static_cast<long long>(a) * ow + b;
                if (arg[o] == i * kw + j) {
                    acc += dy[o];
                }
            }
        }
        dx[idx] = acc;
    }
}

__device__ __forceinline__ int pool_count(int a, int b, FASTNN_CONV_GEOMETRY) {
    const int i0 = max(a * sh - pt, 0);
    const int i1 = min(a * sh - pt + kh, h);
    const int j0 = max(b * sw - pl, 0);
    const int j1 = min(b * sw - pl + kw, w);
    return max((i1 - i0) * (j1 - j0), 1);
}

template <typename T>
__device__ __forceinline__ void avgpool_forward(const T* x, T* y, FASTNN_CONV_GEOMETRY) {
    const long long total = static_cast<long long>(n) * c * oh * ow;
    for (long long idx = grid_start(); idx < total; idx += grid_stride()) {
        long long nc;
        int a, b;
        pool_position(idx, oh, ow, &nc, &a, &b);
        const T* xp = x + nc * h * w;
        const int i0 = max(a * sh - pt, 0);
        const int i1 = min(a * sh - pt + kh, h);
        const int j0 = max(b * sw - pl, 0);
        const int j1 = min(b * sw - pl + kw, w);
        T acc = T(0);
        for (int ih = i0; ih < i1; ++ih) {
            for (int iw = j0; iw < j1; ++iw) {
                acc += xp[ih * w + iw];
            }
        }
        y[idx] = acc / T(pool_count(a, b, FASTNN_CONV_ARGS));
    }
}

// g = dy / (window element count), divided by the host (as in the reference): each pixel
// gathers g of the windows that contain it.
template <typename T>
__device__ __forceinline__ void avgpool_backward(const T* g, T* dx, FASTNN_CONV_GEOMETRY) {
    const long long total = static_cast<long long>(n) * c * h * w;
    for (long long idx = grid_start(); idx < total; idx += grid_stride()) {
        const int iw = static_cast<int>(idx % w);
        const int ih = static_cast<int>((idx / w) % h);
        const long long nc = idx / (static_cast<long long>(w) * h);
        const long long base = nc * oh * ow;
        T acc = T(0);
        for (int i = 0; i < kh; ++i) {
            const int ta = ih + pt - i;
            if (ta < 0 || ta % sh != 0) continue;
            const int a = ta / sh;
            if (a >= oh) continue;
            for (int j = 0; j < kw; ++j) {
                const int tb = iw + pl - j;
                if (tb < 0 || tb % sw != 0) continue;
                const int b = tb / sw;
                if (b >= ow) continue;
                acc += g[base + static_cast<long long>(a) * ow + b];
            }
        }
        dx[idx] = acc;
    }
}

}  // namespace fastnn

#define FASTNN_CONV_KERNELS(T, S)                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_CONV_THREADS)                           \
fastnn_im2col_##S(const T* x, T* cols, FASTNN_CONV_GEOMETRY) {                              \
    fastnn::im2col<T>(x, cols, FASTNN_CONV_ARGS);                                           \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_CONV_THREADS)                           \
fastnn_col2im_##S(const T* cols, T* dx, FASTNN_CONV_GEOMETRY) {                             \
    fastnn::col2im<T>(cols, dx, FASTNN_CONV_ARGS);                                          \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_CONV_THREADS)                           \
fastnn_rows_to_nchw_##S(const T* rows, const T* bias, T* y, long long n, long long f,       \
                        long long plane, int has_bias) {                                    \
    fastnn::rows_to_nchw<T>(rows, bias, y, n, f, plane, has_bias);                          \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_CONV_THREADS)                           \
fastnn_nchw_to_rows_##S(const T* dy, T* rows, long long n, long long f, long long plane) {  \
    fastnn::nchw_to_rows<T>(dy, rows, n, f, plane);                                         \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_CONV_THREADS)                           \
fastnn_maxpool_forward_##S(const T* x, T* y, int* arg, FASTNN_CONV_GEOMETRY) {              \
    fastnn::maxpool_forward<T>(x, y, arg, FASTNN_CONV_ARGS);                                \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_CONV_THREADS)                           \
fastnn_maxpool_backward_##S(const T* dy, const int* arg, T* dx, FASTNN_CONV_GEOMETRY) {     \
    fastnn::maxpool_backward<T>(dy, arg, dx, FASTNN_CONV_ARGS);                             \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_CONV_THREADS)                           \
fastnn_avgpool_forward_##S(const T* x, T* y, FASTNN_CONV_GEOMETRY) {                        \
    fastnn::avgpool_forward<T>(x, y, FASTNN_CONV_ARGS);                                     \
}                                                                                           \
extern "C" __global__ void __launch_bounds__(FASTNN_CONV_THREADS)                           \
fastnn_avgpool_backward_##S(const T* g, T* dx, FASTNN_CONV_GEOMETRY) {                      \
    fastnn::avgpool_backward<T>(g, dx, FASTNN_CONV_ARGS);                                   \
}
"""

CONV = register_source(KernelSource(
    name="conv",
    kernels=(
        "fastnn_im2col",
        "fastnn_col2im",
        "fastnn_rows_to_nchw",
        "fastnn_nchw_to_rows",
        "fastnn_maxpool_forward",
        "fastnn_maxpool_backward",
        "fastnn_avgpool_forward",
        "fastnn_avgpool_backward",
    ),
    body=f"#define FASTNN_CONV_THREADS {CONV_THREADS}\n" + _CONV_BODY,
))
