"""Every entrypoint that promotes passes the registry key, so a deployment that sets
RAYTRADE_REGISTRY_HMAC_KEY never gets a version its replicas would refuse for a missing MAC."""

from __future__ import annotations

import ast
from pathlib import Path

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def _promote_calls() -> list[tuple[str, int, set[str]]]:
    calls = []
    for path in sorted(CLUSTER.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "promote":
                calls.append((path.name, node.lineno, {k.arg for k in node.keywords if k.arg}))
    return calls


def test_every_promote_call_passes_the_registry_key() -> None:
    calls = _promote_calls()
    assert {name for name, _, _ in calls} >= {"promote.py", "select.py", "demo.py"}
    missing = [f"{name}:{line}" for name, line, keywords in calls if "hmac_key" not in keywords]
    assert missing == []
