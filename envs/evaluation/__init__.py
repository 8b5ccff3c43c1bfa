"""Honest evaluation of policies: baselines and ``kelly_lite`` (``policies``, ``kelly_lite``), the
harness that replays them all through one simulator and cost model (``harness``, ``replay``),
bootstrap intervals (``stats``) and the report: the typed document (``document``), its markdown / html
rendering and ``write_report`` (``render``), and the plots (``plots``).

Entrypoints live in ``cluster/evaluate.py`` (``raytrade evaluate``) and ``cluster/nightly.py``.
"""
