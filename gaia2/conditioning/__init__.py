"""Conditioning encoders of the GAIA-2 world model (paper sections 2.2.3 and 4): ego action
(symlog + MLP, for adaptive layer norm), dynamic agents, metadata, CLIP and scenario embeddings (as
cross-attention tokens), conditioning and camera dropout."""

from gaia2.conditioning.action import (CURVATURE_MAX, CURVATURE_SCALE, SPEED_MAX, SPEED_SCALE, ActionEncoder,
                                       normalise_action, symlog)
from gaia2.conditioning.agents import AgentEncoder, instance_dropout
from gaia2.conditioning.config import ConditioningConfig
from gaia2.conditioning.dropout import ConditioningDropout, camera_dropout
from gaia2.conditioning.embeddings import ClipProjection, ScenarioProjection, init_weights
from gaia2.conditioning.encoder import VARIABLES, ConditioningEncoder, ConditioningOutput
from gaia2.conditioning.metadata import MetadataEncoder

__all__ = ["CURVATURE_MAX", "CURVATURE_SCALE", "SPEED_MAX", "SPEED_SCALE", "VARIABLES", "ActionEncoder",
           "AgentEncoder", "ClipProjection", "ConditioningConfig", "ConditioningDropout", "ConditioningEncoder",
           "ConditioningOutput", "MetadataEncoder", "ScenarioProjection", "camera_dropout", "init_weights",
           "instance_dropout", "normalise_action", "symlog"]
