"""MeshConfig -> ``MeshSettings`` for translation: the reader is ``model.meshconfig`` (pure, below ``api`` so that
admission of the ``istio`` ConfigMap refuses what the server could not load); this is its place in translate."""

from __future__ import annotations

from meshplane.model.meshconfig import MeshConfig, MeshConfigError, parse_mesh_config, parse_mesh_yaml

__all__ = ["MeshConfig", "MeshConfigError", "parse_mesh_config", "parse_mesh_yaml"]
