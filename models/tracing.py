"""Traced no-grad forwards: a network's ``torch.jit.trace`` per input shape, checked against eager.

Why: a serving forward of a small batch is a few hundred tensor ops of a few microseconds each,
most of it Python dispatch, not arithmetic (the ``gnn`` encoder and score head: ~140 ops). A trace
runs the same aten ops from C++, without the Python between them: measured on the benchmark's
32-symbol ``gnn`` policy (one torch thread, alternating timings), 904 -> 581 us at one observation,
1,428 -> 948 us at three, 2,127 -> 1,627 us at eight, the outputs equal bit for bit on 30 random
observations per size (random features and masks).

**Per shape.** A trace fixes every size it saw (and the module's per-shape caches become
constants), so :class:`ShapeTraces` keeps one trace per input shape and dtype; serving sees a
handful of batch sizes. A shape is traced the first time it is called (~50 ms), so a service warms
the sizes it will batch before it answers and then closes the traces
(``serve.decide.DecisionService.probe``): a batch size it did not warm runs eagerly, no request
pays a trace.

**Checked, or not used.** Right after tracing, the trace is run three times on the input it was
traced on (the profiling executor re-optimises a graph over its first runs) and each output is
compared with the eager network's, bit for bit (``torch.equal``, NaN where eager has NaN); on any
difference, or an error while tracing, that shape runs eagerly from then on, with a warning. What
a trace cannot follow is data-dependent Python control flow; the networks traced here have none
(their branches depend on the model's structure and the input's shape only), and the check stands
guard for the input it sees.

**What is traced.** :class:`ObsInference`: from the raw observation (the flat tensor, or a
``Dict``'s four tensors) to the scores, the action distribution's inputs and the mask: the split
(``models.common.split_obs``), the network and the distribution inputs in one trace; the projection
to weights (compiled, not torch) stays outside. A trace's outputs (a tuple) are checked one by one.

**Only for frozen weights.** The trace shares the network's parameters, so an in-place update
(``load_state_dict``) is seen, but a module rebuilt or replaced is not: traced inference is for a
loaded policy that only answers (``models.load``'d for serving), never for one that trains.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from raytrade.models.common import PortfolioObs, split_obs

log = logging.getLogger(__name__)

MAX_TRACED_SHAPES = 64
"""Traces kept per network; a new shape beyond them runs eagerly (nothing is evicted)."""
CHECK_RUNS = 3
"""Runs of a new trace compared with the eager output before it is used."""

Key = tuple[tuple[tuple[int, ...], torch.dtype], ...]


def _same(a: Any, b: Any) -> bool:
    """Bit for bit the same tensor (or tuple of tensors), NaN where the other has NaN."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(map(_same, a, b))
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if torch.equal(a, b):
        return True
    return a.is_floating_point() and bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


class ShapeTraces:
    """``traces(*tensors)`` = ``net(*tensors)``, through a trace of ``net`` for that input shape.

    Call it with grad disabled (``torch.no_grad`` / ``inference_mode``): it is the no-grad forward.
    A shape seen for the first time is traced and checked then (~50 ms), unless the traces are
    :meth:`closed` (a service closes them once its batch sizes are warmed: no request pays a
    trace) or :data:`MAX_TRACED_SHAPES` are kept already: such a shape runs ``net`` itself.
    ``traced_shapes`` lists the shapes whose trace passed the check, ``eager_shapes`` those that
    failed it. Safe to call from several threads (a lock around tracing). A copy or a pickle
    holds the network and none of its traces (a copy traces its own, over its own weights).
    """

    def __init__(self, net: nn.Module, max_shapes: int = MAX_TRACED_SHAPES) -> None:
        self.net = net
        self.max_shapes = max_shapes
        self.closed = False
        self._by_shape: dict[Key, Callable[..., Any] | None] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"net": self.net, "max_shapes": self.max_shapes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["net"], state["max_shapes"])  # type: ignore[misc]

    @property
    def traced_shapes(self) -> list[Key]:
        return [k for k, v in self._by_shape.items() if v is not None]

    @property
    def eager_shapes(self) -> list[Key]:
        return [k for k, v in self._by_shape.items() if v is None]

    def close(self) -> None:
        """Trace no new shape from now on (those not traced yet run eagerly)."""
        self.closed = True

    def __call__(self, *tensors: torch.Tensor) -> Any:
        if torch.is_grad_enabled():
            raise RuntimeError("ShapeTraces is the no-grad forward: call it under torch.no_grad()")
        key: Key = tuple((tuple(t.shape), t.dtype) for t in tensors)
        traced = self._by_shape.get(key)
        if traced is None and key not in self._by_shape and not self.closed:
            with self._lock:
                if key not in self._by_shape and len(self._by_shape) < self.max_shapes:
                    self._by_shape[key] = self._trace(tensors, key)
                traced = self._by_shape.get(key)
        return self.net(*tensors) if traced is None else traced(*tensors)

    def _trace(self, tensors: tuple[torch.Tensor, ...], key: Key) -> Callable[..., Any] | None:
        """The checked trace for ``key`` (None: that shape runs eagerly)."""
        name = type(self.net).__name__
        try:
            # eager first: it fills the network's own per-shape caches (the gnn's dense constants), so
            # the trace holds them as constants instead of rebuilding them on every call
            expected = self.net(*tensors)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(self.net, tensors, check_trace=False)
            # the trace's own method, called without ``nn.Module.__call__``'s hook machinery (a
            # traced module has no hooks): ~15 us less a call at one observation, the same graph
            forward = traced.forward
            matches = all(_same(forward(*tensors), expected) for _ in range(CHECK_RUNS))
        except Exception as exc:  # a trace that cannot be made is a slower forward, not a failure
            reason = (str(exc).strip().splitlines() or [""])[0][:200]  # not a tensor's whole repr
            log.warning(
                "%s: no trace for input shapes %s (%s: %s), running it eagerly",
                name,
                key,
                type(exc).__name__,
                reason,
            )
            return None
        if not matches:
            log.warning(
                "%s: the trace for input shapes %s differs from the eager forward, running it eagerly",
                name,
                key,
            )
            return None
        return forward


OBS_KEYS = ("features", "weights", "mask", "portfolio")
"""The tensors of a ``Dict`` observation a policy reads (``models.common.split_obs``), in the order
:func:`obs_tensors` passes them."""

Inference = tuple[torch.Tensor, torch.Tensor]
"""``(scores [B, N], action distribution inputs [B, 2N])``."""


def obs_tensors(raw_obs: torch.Tensor | Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The raw observation as :class:`ObsInference`'s inputs: the flat tensor, or a ``Dict``'s
    :data:`OBS_KEYS` tensors."""
    if isinstance(raw_obs, Mapping):
        return tuple(raw_obs[k] for k in OBS_KEYS)
    return (raw_obs,)


class ObsInference(nn.Module):
    """A policy's no-grad inference as a module of its raw observation, what its traced forward
    traces: ``(scores, dist_inputs, mask)`` = ``infer(layers, split_obs(raw_obs))`` plus the split's
    mask, from the flat observation (one tensor) or a ``Dict``'s :data:`OBS_KEYS` tensors (four).

    The split (``models.common.split_obs``) and the distribution inputs are in the trace with the
    network: at one observation they were ~15 tensor ops dispatched from Python around the traced
    scores. ``layers`` (the modules and parameters ``infer`` reads) are registered here, so a trace
    shares their parameters rather than copying them in as constants, and ``infer`` reads them only
    through its argument (a module-level function, no closure): a copy of the policy computes with its
    own layers."""

    def __init__(
        self, layers: nn.Module, n_features: int, infer: Callable[[Any, PortfolioObs], Inference]
    ) -> None:
        super().__init__()
        self.layers = layers
        self.n_features = n_features
        self.infer = infer

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raw = tensors[0] if len(tensors) == 1 else dict(zip(OBS_KEYS, tensors, strict=True))
        obs = split_obs(raw, self.n_features)
        scores, dist_inputs = self.infer(self.layers, obs)
        return scores, dist_inputs, obs.mask
