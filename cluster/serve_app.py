"""The Serve application builder for config-file deploys (``serve run``, ``serve deploy``, a KubeRay
RayService's ``import_path: raytrade.cluster.serve_app:app_builder``).

It is an entrypoint: it reads the Serve token from the settings (``RAYTRADE_SERVE_TOKEN``, a
Kubernetes secret in the pod's environment, or the settings file), or only its digest
(``RAYTRADE_SERVE_TOKEN_SHA256``: a serving pod then never holds the token), and passes only the
digest down to ``serve.app.build_app``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from raytrade.cluster.settings import load_settings, registry_key_reader
from raytrade.models.registry_load import verify_version
from raytrade.replay.timeutil import MAX_FEATURE_AGE_HOURS, MAX_MISSED_BARS
from raytrade.serve.app import HttpConfig, ServiceConfig, build_app
from raytrade.serve.caps import MAX_QUOTE_MOVE, ExposureCaps
from raytrade.serve.decide import ServeConfig


class BuilderArgs(BaseModel):
    """Arguments of :func:`app_builder` (``serve run raytrade.cluster.serve_app:app_builder model=...
    registry=...``, or a RayService's ``serveConfigV2``); strings, as Serve passes them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    registry: str
    replicas: int = Field(1, ge=1)
    replica_cpus: float = Field(1.0, ge=0)
    max_feature_age_hours: float = Field(MAX_FEATURE_AGE_HOURS, ge=0, description="0: never stale")
    max_missed_bars: int = Field(MAX_MISSED_BARS, ge=0)
    max_quote_move: float = Field(MAX_QUOTE_MOVE, ge=0, description="0: no quote band (else above 1)")
    max_batch_size: int = Field(16, ge=1)
    batch_wait_ms: float = Field(ServiceConfig.model_fields["batch_wait_ms"].default, ge=0)
    busy_wait_ms: float = Field(ServiceConfig.model_fields["busy_wait_ms"].default, ge=0)
    max_as_of_skew_s: float = Field(900.0, ge=0, description="0: any as_of")
    max_body_bytes: int = Field(1 << 20, ge=1024)
    docs: bool = False
    caps: ExposureCaps = Field(
        ExposureCaps(), description="hard caps after the model (a mapping in serveConfigV2's args)"
    )


def app_builder(args: dict[str, str]) -> Any:
    """Serve application builder for config-file deploys (KubeRay RayService, ``serve deploy``).

    The token is read here from ``RAYTRADE_SERVE_TOKEN`` (a Kubernetes secret in the pod's
    environment, or the settings file) and refused when shorter than 32 characters, or its digest from
    ``RAYTRADE_SERVE_TOKEN_SHA256`` (``cluster.settings.Settings.serve_token_digest``); only the digest
    reaches the deployment. The version is checked here as a replica checks it before unpickling
    (``models.registry_load.verify_version``: manifest, signature under the registry key, file
    sha256s), so a deploy of a version the replicas would refuse fails with that one-line reason.
    """
    parsed = BuilderArgs.model_validate(args)
    digest = load_settings().serve_token_digest()
    http = HttpConfig(
        max_body_bytes=parsed.max_body_bytes,
        docs=parsed.docs,
        max_as_of_skew_s=parsed.max_as_of_skew_s or None,
    )
    config = ServiceConfig(
        model=parsed.model,
        registry=parsed.registry,
        decide=ServeConfig(
            max_feature_age_hours=parsed.max_feature_age_hours or None,
            max_missed_bars=parsed.max_missed_bars,
            max_quote_move=parsed.max_quote_move or None,
            caps=parsed.caps,
        ),
        max_batch_size=parsed.max_batch_size,
        batch_wait_ms=parsed.batch_wait_ms,
        busy_wait_ms=parsed.busy_wait_ms,
    )
    key = registry_key_reader()  # a weak key ends here
    # so does a version every replica would refuse (nothing unpickled): see verify_version
    verify_version(parsed.model, parsed.registry, None if key is None else key())
    return build_app(
        config,
        None,
        parsed.replicas,
        parsed.replica_cpus,
        http,
        registry_key=key,
        token_sha256=digest,
    )
