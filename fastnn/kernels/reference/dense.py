"""Reference matrix ops: matmul and the affine map of a Dense layer."""

from __future__ import annotations

from fastnn.kernels.registry import reference_op


@reference_op
def matmul(be, a, b, out=None):
    """a @ b through BLAS (NumPy) or cuBLAS (CuPy)."""
    return be.xp.matmul(a, b, out=out)


@reference_op
def prepare_rhs(be, b):
    """``b`` in the form ``matmul(a, b)`` runs fastest on, for many products with one ``b``
    (the recurrent weight of an RNN, once per time step). A snapshot: prepare again after
    ``b`` changes. The reference returns ``b`` itself."""
    return b


@reference_op
def linear(be, x, W, b=None, out=None):
    """y = x @ W + b for x: (N, D_in), W: (D_in, D_out), b: (D_out,) or None."""
    y = be.xp.matmul(x, W, out=out)
    if b is not None:
        y += b
    return y


@reference_op
def linear_backward(be, dz, x, W, dW=None, db=None, dx=None, need_dx: bool = True):
    """Gradients of y = x @ W + b given dz = dL/dy.

    Writes dW = x.T @ dz and db = sum(dz, 0) in place when buffers are given and returns
    dx = dz @ W.T (None when ``need_dx`` is False, e.g. for the first layer).
    """
    xp = be.xp
    if dW is not None:
        if x.shape[0] == 1:
            # matmul with inner dimension 1 falls off BLAS; an outer product does not.
            xp.outer(x[0], dz[0], out=dW)
        else:
            xp.matmul(x.T, dz, out=dW)
    if db is not None:
        xp.sum(dz, axis=0, out=db)
    if not need_dx:
        return None
    return xp.matmul(dz, W.T, out=dx)
