"""The Triton kernel of the softmax cross-entropy rows (see :mod:`._triton_rows`, which
launches it). Importing this module imports Triton; ``TRITON_INTERPRET=1`` must be set before
that for the kernel to run in the interpreter (on CPU tensors)."""

import triton
import triton.language as tl


@triton.jit
def tanh(u):
    # tanh(|u|) = -expm1(-2|u|) / (2 + expm1(-2|u|)), expm1 by Kahan's exp/log
    # correction: a few ulps everywhere, including |u| << 1, where 1 - exp(-2|u|) loses
    # every digit. (Triton's core language has no tanh; libdevice's does not run in the
    # interpreter.)
    a = -2.0 * tl.abs(u)
    e = tl.exp(a)
    one = e == 1.0
    em1 = tl.where(one, a, (e - 1.0) * a / tl.log(tl.where(one, 0.5, e)))
    em1 = tl.where(a > -1.0, em1, e - 1.0)
    t = -em1 / (2.0 + em1)
    return tl.where(u < 0, -t, t)


@triton.jit
def load_block(xrow, trow, w_ptr, offs, V, vlim, eps, cap,
               PROB: tl.constexpr, HAS_W: tl.constexpr, CAP: tl.constexpr,
               SMOOTH: tl.constexpr):
    """One block of a row, as both sweeps read it: the columns in the row, the columns read
    (none for an ignored row), the logits in float32 (soft-capped), tanh of them (softcap's
    derivative needs it), the effective target mass ``q = w ((1 - eps) t + eps / V)`` of a
    probability target, and the class weights where the loss reads them (probabilities, or
    smoothing; 1 without weights); 0 where unused or unread."""
    inb = offs < V
    ld = offs < vlim  # vlim is V, or 0 for an ignored row
    z = tl.load(xrow + offs, mask=ld, other=0.0).to(tl.float32)
    th = tl.zeros_like(z)
    if CAP:
        th = tanh(z / cap)
        z = cap * th
    q = tl.zeros_like(z)
    if PROB:
        q = tl.load(trow + offs, mask=inb, other=0.0).to(tl.float32)
        if SMOOTH:
            q = tl.where(inb, q * (1.0 - eps) + eps / V, 0.0)
    w = tl.where(ld, 1.0, 0.0)
    if HAS_W and (PROB or SMOOTH):
        w = tl.load(w_ptr + offs, mask=ld, other=0.0).to(tl.float32)
    if PROB:
        q = q * w
    return inb, ld, z, th, q, w


@triton.jit
def rows_kernel(
    x_ptr, sx, t_ptr, st, w_ptr, g_ptr, sg,
    gs_ptr, gs_stride, zs_ptr, zs_stride,
    loss_ptr, z_ptr, lse_ptr,
    V, eps, zc, cap, ignore_index,
    PROB: tl.constexpr, HAS_W: tl.constexpr, CAP: tl.constexpr, SMOOTH: tl.constexpr,
    GRAD: tl.constexpr, GS_PTR: tl.constexpr, ZS_PTR: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64 offsets: R * V passes 2**31 at LLM sizes
    xrow = x_ptr + row * sx
    cols = tl.arange(0, BLOCK)
    ninf = float("-inf")
    trow = t_ptr + row * st
    if PROB:
        vlim = V
    else:
        y = tl.load(t_ptr + row)
        valid = y != ignore_index
        inrange = (y >= 0) & (y < V)
        ysafe = tl.where(valid & inrange, y, 0)
        # the columns a row reads: none for an ignored row (a comparison, not inb & valid,
        # whose result the interpreter does not take as a load mask)
        vlim = tl.where(valid, V, 0)
    m = tl.full([], ninf, tl.float32)
    s = tl.zeros([], tl.float32)
    a1 = tl.zeros([], tl.float32)  # probabilities: sum_c q_c; labels: sum_c w_c
    a2 = tl.zeros([], tl.float32)  # probabilities: sum_c q_c z_c; labels: eps/V sum w_c z_c
    for start in range(0, V, BLOCK):
        inb, ld, z, th, q, w = load_block(xrow, trow, w_ptr, start + cols, V, vlim, eps, cap,
                                          PROB, HAS_W, CAP, SMOOTH)
        zm = tl.where(ld, z, ninf)
        nm = tl.maximum(m, tl.max(zm, 0))
        shift = tl.where(nm == ninf, 0.0, nm)  # a row of -inf so far: exp gives 0, not NaN
        s = s * tl.exp(m - shift) + tl.sum(tl.exp(zm - shift), 0)
        m = nm
        if PROB:
            a1 += tl.sum(q, 0)
            a2 += tl.sum(q * z, 0)
        elif SMOOTH:
            a1 += tl.sum(w, 0)
            # each term scaled before the sum: near the float limit the plain sum of the
            # logits overflows where the loss is representable
            a2 += tl.sum(z * (w * (eps / V)), 0)
    pos = s > 0.0
    lse = tl.where(pos, m + tl.log(tl.where(pos, s, 1.0)), ninf)
    if PROB:
        main = a1 * lse - a2
        wy = 1.0
    else:
        zy = tl.load(xrow + ysafe, mask=valid, other=0.0).to(tl.float32)
        if CAP:
            zy = cap * tanh(zy / cap)
        if HAS_W:
            wy = tl.load(w_ptr + ysafe, mask=valid, other=0.0).to(tl.float32)
        else:
            wy = 1.0
        a = (1.0 - eps) * wy
        # each product before the difference: lse - z_y alone can overflow
        main = a * lse - a * zy
        if SMOOTH:
            main += ((eps / V) * a1) * lse - a2
        main = tl.where(inrange, main, float("nan"))
        main = tl.where(valid, main, 0.0)
        lse = tl.where(valid, lse, 0.0)
    tl.store(loss_ptr + row, main)
    tl.store(z_ptr + row, zc * lse * lse)
    tl.store(lse_ptr + row, lse)
    if GRAD:
        if GS_PTR:
            gs = tl.load(gs_ptr + row * gs_stride).to(tl.float32)
        else:
            gs = 1.0
        if ZS_PTR:
            zs = tl.load(zs_ptr + row * zs_stride).to(tl.float32)
        else:
            zs = 1.0
        if PROB:
            coef = gs * a1
        else:
            coef = gs * (1.0 - eps) * wy
            if SMOOTH:
                coef += gs * (eps / V) * a1
        coef = (coef + zs * 2.0 * zc * lse) / tl.where(pos, s, 1.0)
        mshift = tl.where(m == ninf, 0.0, m)
        grow = g_ptr + row * sg
        for start in range(0, V, BLOCK):
            offs = start + cols
            inb, ld, z, th, q, w = load_block(xrow, trow, w_ptr, offs, V, vlim, eps, cap,
                                              PROB, HAS_W, CAP, SMOOTH)
            g = tl.exp(z - mshift) * coef
            if PROB:
                g -= gs * q
            else:
                if SMOOTH:
                    g -= gs * (eps / V) * w
                g = tl.where(offs == ysafe, g - gs * (1.0 - eps) * wy, g)
            if CAP:
                g = g * (1.0 - th * th)
            g = tl.where(ld, g, 0.0)  # an ignored row's gradient is 0, whatever its logits
            tl.store(grow + offs, g.to(g_ptr.dtype.element_ty), mask=inb)
