"""Exact Euclidean projection of target weights onto the portfolio constraints.

The feasible set, per row of a batch of weight vectors ``v`` (shape ``[..., N]``), is

    { w : sum_i |w_i| <= gross_cap,  sum_{i in group} |w_i| <= group_cap,  lower_i <= w_i <= upper_i }

with ``lower_i <= 0 <= upper_i``. The box encodes the per-asset cap (``[-cap, cap]``), long-only
(``lower = 0``), masked (unlisted) assets (``lower = upper = 0``) and the kill switch's unwind-only rule
(``[min(0, w_now), max(0, w_now)]``). The optional group is the crypto sleeve (crypto unlevered).

Why this is exact: the problem is separable, so KKT gives ``w_i = clip(soft(v_i, t_i), lower_i,
upper_i)`` with one threshold ``t_i = tau + mu * [i in group]``, ``tau, mu >= 0``. The total L1 norm
is a piecewise-linear non-increasing function of the threshold with breakpoints at ``|v_i| - cap_i``
and ``|v_i|``; a selection search over the breakpoints (no sort) brackets the one segment that crosses
the budget and we interpolate on it (no iteration to a tolerance). With a group, its own threshold
``tau_g`` is found first; the group's elements then use ``max(tau, tau_g)`` (``mu = max(0, tau_g -
tau)``), which satisfies complementary slackness for both constraints.

The numpy version runs that search as one compiled (numba) loop over the rows: the simulator projects
a small batch every step, where a chain of numpy calls costs far more in call overhead than in
arithmetic. The torch version finds the thresholds the same way without gradient and then recomputes them in
closed form over the active set (``tau = (sum_active |v| + sum_capped cap - budget) / n_active``), so
its gradients are the projection's exact (almost-everywhere) Jacobian. Where no gradient is wanted
(serving's no-grad forwards) it hands the tensors to the compiled numpy version instead.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from raytrade.envs.kernel_cache import use_kernel_cache

use_kernel_cache()  # before any kernel compiles: the cache is keyed on every kernel module

ArrayLike = np.ndarray | float


class ConstraintConfig(BaseModel):
    """Portfolio constraints, in fractions of equity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gross_cap: float = Field(2.0, ge=0, description="sum |w| cap; 2x = end-of-day equity leverage cap")
    crypto_gross_cap: float = Field(1.0, ge=0, description="sum |w| over crypto assets (unlevered)")
    per_asset_cap: float = Field(1.0, ge=0, description="|w_i| cap per asset")
    long_only: bool = Field(False, description="forbid short weights")
    crypto_long_only: bool = Field(
        True, description="forbid short crypto weights (the broker lends no crypto; the loop is long-only)"
    )


# --------------------------------------------------------------------------------------------- numpy

_NO_MASK = np.zeros(0, dtype=np.bool_)  # a compiled constant: the unmasked search allocates nothing


@numba.njit(cache=True, nogil=True)
def _l1_at(  # pragma: no cover (compiled)
    a: np.ndarray,
    cap: np.ndarray,
    floor: np.ndarray,
    tau: float,
    mask: np.ndarray,
    use_mask: bool,
) -> tuple[float, int]:
    """``sum_i min(cap_i, max(0, a_i - max(tau, floor_i)))`` over the elements (of ``mask`` when
    ``use_mask``), with ``a = |v|`` and ``cap_i = upper_i`` for ``v_i >= 0``, ``-lower_i`` otherwise;
    and how many of them shrink just above ``tau`` (the sum's slope there is minus that count)."""
    total = 0.0
    shrinking = 0
    for j in range(a.shape[0]):
        if use_mask and not mask[j]:
            continue
        f = floor[j]
        x = a[j] - max(tau, f)
        total += min(cap[j], max(x, 0.0))
        shrinking += f <= tau and 0.0 < x <= cap[j]
    return total, shrinking


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "arcp", "contract"})
def _l1_estimate(  # pragma: no cover (compiled)
    a: np.ndarray, cap: np.ndarray, floor: np.ndarray, tau: float
) -> tuple[float, int]:
    """:func:`_l1_at` over every element, summed in whatever order is fastest (fastmath: SIMD
    partial sums). Its rounding differs from the exact sum's, so it only steers the search to a
    guess; every value that decides the threshold comes from :func:`_l1_at`."""
    total = 0.0
    shrinking = 0
    for j in range(a.shape[0]):
        f = floor[j]
        x = a[j] - max(tau, f)
        total += min(cap[j], max(x, 0.0))
        shrinking += (f <= tau) & (x > 0.0) & (x <= cap[j])
    return total, shrinking


@numba.njit(cache=True, nogil=True)
def _around(  # pragma: no cover (compiled)
    a: np.ndarray,
    cap: np.ndarray,
    floor: np.ndarray,
    mask: np.ndarray,
    use_mask: bool,
    lo: float,
    hi: float,
    x: float,
) -> tuple[float, float]:
    """The largest breakpoint in ``(lo, x]`` and the smallest in ``(x, hi)`` (``lo`` / ``hi`` where
    there is none): the candidates nearest ``x`` on either side, with none between them."""
    below, above = lo, hi
    for j in range(a.shape[0]):
        if use_mask and not mask[j]:
            continue
        starts, ends = max(a[j] - cap[j], floor[j]), max(a[j], floor[j])
        # branch-free selects (the loop vectorises)
        below = max(below, starts if lo < starts <= x else lo, ends if lo < ends <= x else lo)
        above = min(above, starts if x < starts < hi else hi, ends if x < ends < hi else hi)
    return below, above


@numba.njit(cache=True, nogil=True)
def _threshold(  # pragma: no cover (compiled)
    a: np.ndarray,
    cap: np.ndarray,
    budget: float,
    floor: np.ndarray,
    mask: np.ndarray,
    use_mask: bool,
    pts: np.ndarray,
    newton_steps: int = 8,
    bracket_rounds: int = 4,
) -> float:
    """The smallest ``tau >= 0`` with ``_l1_at(tau) <= budget`` (``pts``: scratch of ``2 N``).

    The sum is piecewise linear and non-increasing in ``tau``, with breakpoints where an element
    starts shrinking (``max(a_i - cap_i, floor_i)``) and where it reaches 0 (``max(a_i, floor_i)``).
    The answer is the line through the two breakpoints that bracket the crossing: the largest where
    the sum is above the budget (or 0) and the smallest where it is not (at the last breakpoint the
    sum is 0), evaluated exactly by :func:`_l1_at` (no iteration to a tolerance). Those two ends and
    their sums are facts of the data, not of how they are found, so the search is free to be fast:

    1. Newton steps from 0 at real points (``newton_steps`` of them at most, summed by
       :func:`_l1_estimate`). Where the sum is convex, as it is wherever no cap binds, they climb
       to the crossing from below and land on it once no breakpoint is left between.
    2. The breakpoints either side of that guess (:func:`_around`) are evaluated exactly; when the
       crossing lies between them they are the bracket. Otherwise the bracket shrinks to the side
       that holds it and the next guess is the smaller of the Newton step from its lower end and
       the secant through both ends (``bracket_rounds`` rounds at most).
    3. What is still open after that goes to a selection search over the breakpoints left in the
       bracket (:func:`_select`: no sort, expected O(N) work whatever the data).
    """
    f_lo, slope_lo = _l1_at(a, cap, floor, 0.0, mask, use_mask)
    if f_lo <= budget:
        return 0.0
    hi = 0.0
    for j in range(a.shape[0]):
        if not use_mask or mask[j]:
            hi = max(hi, a[j], floor[j])
    lo, f_hi = 0.0, 0.0
    x, f_x, slope_x = 0.0, f_lo, slope_lo
    for _ in range(newton_steps):
        if slope_x <= 0:
            break
        step = x + (f_x - budget) / slope_x
        if not step < hi:
            break
        if use_mask:
            f, slope = _l1_at(a, cap, floor, step, mask, use_mask)
        else:
            f, slope = _l1_estimate(a, cap, floor, step)
        x = step
        if f <= budget:
            break
        f_x, slope_x = f, slope
    for _ in range(bracket_rounds):
        below, above = _around(a, cap, floor, mask, use_mask, lo, hi, x)
        if below == lo and above == hi:  # no breakpoint strictly inside: (lo, hi) is the bracket
            return lo + (f_lo - budget) * (hi - lo) / (f_lo - f_hi)
        if below > lo:
            f, slope = _l1_at(a, cap, floor, below, mask, use_mask)
            if f <= budget:  # the crossing is at or below ``below``: ``above`` is beyond it
                hi, f_hi = below, f
            else:
                lo, f_lo, slope_lo = below, f, slope
        if lo == below and above < hi:
            f, slope = _l1_at(a, cap, floor, above, mask, use_mask)
            if f > budget:
                lo, f_lo, slope_lo = above, f, slope
            else:
                hi, f_hi = above, f
        newton = lo + (f_lo - budget) / slope_lo if slope_lo > 0 else lo
        x = min(newton, lo + (f_lo - budget) * (hi - lo) / (f_lo - f_hi))
    return _select(a, cap, budget, floor, mask, use_mask, pts, lo, f_lo, slope_lo, hi, f_hi)


@numba.njit(cache=True, nogil=True)
def _select(  # pragma: no cover (compiled)
    a: np.ndarray,
    cap: np.ndarray,
    budget: float,
    floor: np.ndarray,
    mask: np.ndarray,
    use_mask: bool,
    pts: np.ndarray,
    lo: float,
    f_lo: float,
    slope_lo: float,
    hi: float,
    f_hi: float,
) -> float:
    """:func:`_threshold` from the bracket ``(lo, hi)`` with its exact sums: a selection search over
    the breakpoints inside (``pts``: scratch of ``2 N``). Each step evaluates the sum at a candidate
    and drops the candidates outside the new bracket; the next is the one nearest the Newton step
    from the lower end, and after a step that did not halve the candidates, an arbitrary one (a
    randomised selection's expected O(N) work, whatever the data)."""
    guess = lo + (f_lo - budget) / slope_lo if slope_lo > 0 else lo
    k = 0
    best, gap = 0, np.inf
    for j in range(a.shape[0]):
        if use_mask and not mask[j]:
            continue
        for p in (max(a[j] - cap[j], floor[j]), max(a[j], floor[j])):
            if lo < p < hi:
                pts[k] = p
                if abs(p - guess) < gap:
                    best, gap = k, abs(p - guess)
                k += 1
    guided = True
    while k > 0:
        pivot = pts[best] if guided else pts[k // 2]
        f, slope = _l1_at(a, cap, floor, pivot, mask, use_mask)
        if f > budget:
            lo, f_lo, slope_lo = pivot, f, slope
        else:
            hi, f_hi = pivot, f
        guess = lo + (f_lo - budget) / slope_lo if slope_lo > 0 else lo
        kept = 0
        best, gap = 0, np.inf
        for q in range(k):  # keep the candidates strictly inside (lo, hi)
            p = pts[q]
            if lo < p < hi:
                pts[kept] = p
                if abs(p - guess) < gap:
                    best, gap = kept, abs(p - guess)
                kept += 1
        guided = not guided or 2 * kept <= k
        k = kept
    return lo + (f_lo - budget) * (hi - lo) / (f_lo - f_hi)


@numba.njit(cache=True, nogil=True)
def _row_parts(  # pragma: no cover (compiled)
    v: np.ndarray, lower: np.ndarray, upper: np.ndarray, a: np.ndarray, cap: np.ndarray
) -> None:
    """``a = |v|`` and each element's cap on ``|w|`` in the direction of ``v`` (once per row)."""
    for j in range(v.shape[0]):
        a[j] = abs(v[j])
        cap[j] = upper[j] if v[j] >= 0 else -lower[j]


@numba.njit(cache=True, nogil=True)
def _write_row(  # pragma: no cover (compiled)
    v: np.ndarray, a: np.ndarray, cap: np.ndarray, floor: np.ndarray, tau: float, w: np.ndarray
) -> None:
    for j in range(v.shape[0]):
        mag = min(cap[j], max(a[j] - max(tau, floor[j]), 0.0))
        w[j] = mag if v[j] > 0 else (-mag if v[j] < 0 else 0.0)


@numba.njit(cache=True, nogil=True)
def project_row(  # pragma: no cover (compiled; covered through project_box_l1 and the simulator)
    v: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    budget: float,
    floor: np.ndarray,
    w: np.ndarray,
    work: np.ndarray,
) -> float:
    """One row ``v [N]`` projected with per-element ``floor`` thresholds into ``w [N]``; returns ``tau``.

    ``tau`` is the smallest ``tau >= 0`` with ``sum_i min(cap_i, max(0, |v_i| - max(tau, floor_i)))
    <= budget`` (:func:`_threshold`). Compiled, so the simulator's step can call it per row without
    numpy's per-call overhead; ``work`` is scratch of ``4 N`` floats, allocated once per batch by
    the caller (an allocation per row cost more than the search on the simulator's small rows).
    """
    n = v.shape[0]
    a, cap, pts = work[:n], work[n : 2 * n], work[2 * n : 4 * n]
    _row_parts(v, lower, upper, a, cap)
    tau = _threshold(a, cap, budget, floor, _NO_MASK, False, pts)
    _write_row(v, a, cap, floor, tau, w)
    return tau


@numba.njit(cache=True, nogil=True)
def project_row_grouped(  # pragma: no cover (compiled)
    v: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    budget: float,
    group: np.ndarray,
    group_budget: float,
    w: np.ndarray,
    floor: np.ndarray,
    work: np.ndarray,
) -> float:
    """:func:`project_row` with a group sleeve (``group [N]`` bool, its own ``group_budget``): the
    group's threshold first, then every element with ``floor`` = that threshold on the group (written
    into ``floor [N]``). Returns the overall ``tau``."""
    n = v.shape[0]
    a, cap, pts = work[:n], work[n : 2 * n], work[2 * n : 4 * n]
    _row_parts(v, lower, upper, a, cap)
    for j in range(n):
        floor[j] = 0.0
    tau_g = _threshold(a, cap, group_budget, floor, group, True, pts)
    for j in range(n):
        floor[j] = tau_g if group[j] else 0.0
    tau = _threshold(a, cap, budget, floor, group, False, pts)
    _write_row(v, a, cap, floor, tau, w)
    return tau


@numba.njit(cache=True, nogil=True)
def _project_rows(  # pragma: no cover (compiled; covered through project_box_l1)
    v: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    budget: np.ndarray,
    group: np.ndarray,
    group_budget: np.ndarray,
    has_group: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`project_row` (or :func:`project_row_grouped` with ``group [R, N]``) over the rows of
    ``v [R, N]``; returns ``(w, tau [R], floor [R, N])``."""
    r, n = v.shape
    w, tau, floor, work = np.empty((r, n)), np.empty(r), np.zeros((r, n)), np.empty(4 * n)
    for i in range(r):
        if has_group:
            tau[i] = project_row_grouped(
                v[i], lower[i], upper[i], budget[i], group[i], group_budget[i], w[i], floor[i], work
            )
        else:
            tau[i] = project_row(v[i], lower[i], upper[i], budget[i], floor[i], w[i], work)
    return w, tau, floor


def project_box_l1(
    v: np.ndarray,
    lower: ArrayLike,
    upper: ArrayLike,
    gross_cap: ArrayLike,
    group: np.ndarray | None = None,
    group_cap: ArrayLike | None = None,
) -> np.ndarray:
    """Exact projection of ``v [..., N]`` onto the L1 ball(s) intersected with ``[lower, upper]``.

    ``lower``/``upper`` broadcast to ``v`` and must satisfy ``lower <= 0 <= upper``; ``gross_cap`` and
    ``group_cap`` are scalars or arrays of shape ``v.shape[:-1]``; ``group`` is a boolean ``[N]`` (or
    broadcastable) membership mask.
    """
    w, _, _ = _project_box_l1_full(v, lower, upper, gross_cap, group, group_cap)
    return w


def _per_elem(x: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` broadcast to ``shape`` as contiguous float64 rows ``[-1, N]`` (no copy when it already is)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape != shape:
        arr = np.broadcast_to(arr, shape)
    return np.ascontiguousarray(arr.reshape(-1, shape[-1]))


def _per_row(x: ArrayLike, lead: tuple[int, ...]) -> np.ndarray:
    """A per-row scalar ``x`` broadcast to ``lead`` and flattened to contiguous float64 ``[-1]``."""
    if isinstance(x, float | int):
        return np.full(math.prod(lead), float(x))
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape != lead:
        arr = np.broadcast_to(arr, lead)
    return np.ascontiguousarray(arr.reshape(-1))


def _project_box_l1_full(
    v: np.ndarray,
    lower: ArrayLike,
    upper: ArrayLike,
    gross_cap: ArrayLike,
    group: np.ndarray | None,
    group_cap: ArrayLike | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projection plus the thresholds ``tau`` [...] and per-element floor [..., N] (for KKT tests)."""
    v = np.asarray(v, dtype=np.float64)
    lead, n = v.shape[:-1], v.shape[-1]
    flat = np.ascontiguousarray(v.reshape(-1, n))
    lo, hi = _per_elem(lower, v.shape), _per_elem(upper, v.shape)
    if group is not None and group_cap is not None:
        has_group, g, gb = True, _per_elem(group, v.shape).astype(bool), _per_row(group_cap, lead)
    else:
        has_group, g, gb = False, np.zeros(flat.shape, dtype=bool), np.zeros(flat.shape[0])
    w, tau, floor = _project_rows(flat, lo, hi, _per_row(gross_cap, lead), g, gb, has_group)
    return w.reshape(v.shape), tau.reshape(lead), floor.reshape(v.shape)


def weight_bounds(mask: np.ndarray, per_asset_cap: float, long_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Box ``[lower, upper]`` for tradeable (``mask``) assets; masked assets get ``[0, 0]``."""
    upper = np.where(mask, per_asset_cap, 0.0)
    lower = np.zeros_like(upper) if long_only else -upper
    return lower, upper


def project_weights(
    w: np.ndarray,
    gross_cap: ArrayLike,
    per_asset_cap: float,
    long_only: bool = False,
    mask: np.ndarray | None = None,
    group: np.ndarray | None = None,
    group_cap: ArrayLike | None = None,
) -> np.ndarray:
    """Project proposed weights ``w [..., N]`` onto the gross / per-asset / long-only / mask set."""
    w = np.asarray(w, dtype=np.float64)
    if mask is None:
        m = np.ones(w.shape, dtype=bool)
    else:
        m = mask if np.shape(mask) == w.shape else np.broadcast_to(mask, w.shape)
    lower, upper = weight_bounds(m, per_asset_cap, long_only)
    return project_box_l1(w, lower, upper, gross_cap, group, group_cap)


# --------------------------------------------------------------------------------------------- torch


@torch.no_grad()
def _threshold_torch_nograd(
    a: torch.Tensor, cap: torch.Tensor, budget: torch.Tensor, floor: torch.Tensor
) -> torch.Tensor:
    f0 = torch.minimum(cap, torch.relu(a - floor)).sum(-1)
    n = a.shape[-1]
    pts = torch.cat([torch.maximum(a - cap, floor), torch.maximum(a, floor)], dim=-1)
    ps, order = torch.sort(pts, dim=-1)
    ds = torch.where(order < n, -1.0, 1.0).to(a.dtype)
    slope_before = torch.zeros_like(ps)
    slope_before[..., 1:] = torch.cumsum(ds[..., :-1], dim=-1)
    seg = torch.diff(ps, dim=-1, prepend=torch.zeros_like(ps[..., :1]))
    fvals = f0.unsqueeze(-1) + torch.cumsum(slope_before * seg, dim=-1)
    fvals[..., -1] = 0.0
    k = torch.argmax((fvals <= budget.unsqueeze(-1)).to(torch.int8), dim=-1, keepdim=True)
    km1 = torch.clamp(k - 1, min=0)
    slope = slope_before.gather(-1, k).squeeze(-1)
    p_prev = ps.gather(-1, km1).squeeze(-1)
    f_prev = fvals.gather(-1, km1).squeeze(-1)
    safe = torch.where(slope < 0, -slope, torch.ones_like(slope))
    tau = p_prev + torch.where(slope < 0, (f_prev - budget) / safe, torch.zeros_like(slope))
    return torch.where(f0 > budget, tau, torch.zeros_like(tau))


def _threshold_torch(
    a: torch.Tensor, cap: torch.Tensor, budget: torch.Tensor, floor: torch.Tensor
) -> torch.Tensor:
    """Differentiable threshold: found without grad, then recomputed in closed form on the active set."""
    tau0 = _threshold_torch_nograd(a, cap, budget, floor)
    t0 = tau0.unsqueeze(-1)
    governed = floor <= t0
    excess = a - t0
    active = governed & (excess > 0) & (excess < cap)
    contrib = torch.where(
        governed,
        torch.where(excess >= cap, cap, torch.zeros_like(a)),
        torch.minimum(cap, torch.relu(a - floor)),
    )
    n_active = active.sum(-1)
    closed = (torch.where(active, a, torch.zeros_like(a)).sum(-1) + contrib.sum(-1) - budget) / torch.clamp(
        n_active, min=1
    ).to(a.dtype)
    use_closed = (tau0 > 0) & (n_active > 0)
    return torch.where(use_closed, closed, tau0)


def _autograd_wanted(*args: object) -> bool:
    """Whether a gradient can flow from the projection to any of ``args`` (grad mode on and a tensor
    among them that requires one)."""
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


def _compiled_path(v: torch.Tensor, *args: object) -> bool:
    """Whether the compiled numpy projection may answer: no gradient wanted and ``v`` on the CPU."""
    return v.device.type == "cpu" and not _autograd_wanted(v, *args)


def _as_numpy(x: Any) -> Any:
    """A tensor argument as a float64 (bool for a bool tensor) numpy array; anything else unchanged.
    A float32 tensor is widened by numpy (exact, as torch's cast; a fraction of its call cost)."""
    if not isinstance(x, torch.Tensor):
        return x
    x = x.detach()
    if x.dtype == torch.bool:
        return x.numpy()
    if x.dtype == torch.float32:
        return x.numpy().astype(np.float64)
    return x.to(torch.float64).numpy()


def _from_numpy(w: np.ndarray, v: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """The compiled answer ``w`` for input ``v`` as a tensor of ``like``'s dtype, every row of ``v``
    that holds a NaN or an infinity all NaN: a non-finite score is a broken model, and serving's
    check (``serve.decide``) must see it rather than weights the search made up around it. A float32
    answer is rounded by numpy (the same round-to-nearest as torch's cast)."""
    finite = np.isfinite(v)
    if not finite.all():
        w[~finite.all(axis=-1)] = np.nan
    if like.dtype == torch.float32:
        return torch.from_numpy(w.astype(np.float32))
    return torch.from_numpy(w).to(like.dtype)


def project_box_l1_torch(
    v: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    gross_cap: torch.Tensor | float,
    group: torch.Tensor | None = None,
    group_cap: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Differentiable twin of :func:`project_box_l1` (same arguments, tensors).

    Where no gradient can flow (grad mode off, e.g. ``torch.no_grad`` / ``inference_mode``, or no
    argument requires one) and ``v`` is on the CPU, the compiled :func:`project_box_l1` answers: the
    same projection, computed in float64 and rounded once to ``v``'s dtype. Why: serving projects
    a few rows per call, and the autograd path's few dozen small tensor ops cost more than the
    model's layers (about 45 % of a ``ppo_mlp`` forward); the compiled loop is a few microseconds.
    On float64 inputs the two agree to 1e-12; on float32 the compiled answer is the float64
    projection rounded once, the autograd path's carries float32 sums (tests/test_projection_fast.py).
    Training (gradients wanted) always takes the autograd path, unchanged.
    """
    if _compiled_path(v, lower, upper, gross_cap, group_cap):
        g = None if group is None else _as_numpy(group).astype(bool)
        v_np = _as_numpy(v)
        w = project_box_l1(
            v_np, _as_numpy(lower), _as_numpy(upper), _as_numpy(gross_cap), g, _as_numpy(group_cap)
        )
        return _from_numpy(w, v_np, v)
    return _project_box_l1_autograd(v, lower, upper, gross_cap, group, group_cap)


def _project_box_l1_autograd(
    v: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    gross_cap: torch.Tensor | float,
    group: torch.Tensor | None = None,
    group_cap: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """:func:`project_box_l1_torch` as tensor ops: its gradients are the projection's exact
    (almost-everywhere) Jacobian."""
    lower = torch.broadcast_to(torch.as_tensor(lower, dtype=v.dtype), v.shape)
    upper = torch.broadcast_to(torch.as_tensor(upper, dtype=v.dtype), v.shape)
    lead = v.shape[:-1]
    a = v.abs()
    cap = torch.where(v >= 0, upper, -lower)
    budget = torch.broadcast_to(torch.as_tensor(gross_cap, dtype=v.dtype), lead)
    floor = torch.zeros_like(a)
    if group is not None and group_cap is not None:
        g = torch.broadcast_to(torch.as_tensor(group, dtype=torch.bool), v.shape)
        gb = torch.broadcast_to(torch.as_tensor(group_cap, dtype=v.dtype), lead)
        zero = torch.zeros_like(a)
        tau_g = _threshold_torch(torch.where(g, a, zero), torch.where(g, cap, zero), gb, zero)
        floor = torch.where(g, tau_g.unsqueeze(-1), zero)
    tau = _threshold_torch(a, cap, budget, floor)
    thr = torch.maximum(tau.unsqueeze(-1), floor)
    return torch.sign(v) * torch.minimum(cap, torch.relu(a - thr))


def project_weights_torch(
    w: torch.Tensor,
    gross_cap: torch.Tensor | float,
    per_asset_cap: float,
    long_only: bool = False,
    mask: torch.Tensor | None = None,
    group: torch.Tensor | None = None,
    group_cap: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Differentiable twin of :func:`project_weights` (e.g. the last layer of a policy); without a
    gradient to carry, the compiled :func:`project_weights` (see :func:`project_box_l1_torch`)."""
    if _compiled_path(w, gross_cap, group_cap):
        m_np = None if mask is None else _as_numpy(mask).astype(bool)
        g_np = None if group is None else _as_numpy(group).astype(bool)
        w_np = _as_numpy(w)
        out = project_weights(
            w_np, _as_numpy(gross_cap), per_asset_cap, long_only, m_np, g_np, _as_numpy(group_cap)
        )
        return _from_numpy(out, w_np, w)
    m: Any = torch.ones_like(w, dtype=torch.bool) if mask is None else torch.broadcast_to(mask, w.shape)
    upper = torch.where(m, torch.full_like(w, per_asset_cap), torch.zeros_like(w))
    lower = torch.zeros_like(w) if long_only else -upper
    return project_box_l1_torch(w, lower, upper, gross_cap, group, group_cap)
