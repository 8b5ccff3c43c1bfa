"""Feature builders of the replay store (DESIGN §3): pure functions, bars in, feature rows out."""

from raytrade.replay.features.build import build_features
from raytrade.replay.features.config import FeatureConfig

__all__ = ["FeatureConfig", "build_features"]
