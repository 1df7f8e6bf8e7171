"""Mesh-wide settings translation needs: ``model.mesh`` (parsed from a MeshConfig by ``translate.meshconfig``)."""

from __future__ import annotations

from meshplane.model.mesh import BodyInCheck, ExtAuthzProvider, MeshSettings, TelemetryProvider

__all__ = ["BodyInCheck", "ExtAuthzProvider", "MeshSettings", "TelemetryProvider"]
