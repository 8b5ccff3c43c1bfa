"""Feature builders of the replay store (DESIGN §3): pure functions, bars in, feature rows out."""

from replay.features.build import build_features
from replay.features.config import FeatureConfig

__all__ = ["FeatureConfig", "build_features"]
