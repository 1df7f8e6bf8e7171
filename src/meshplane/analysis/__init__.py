"""Istio's config analysis (``istioctl analyze``) for meshplane: pure functions from config to messages.

Why a package of its own: the same analysis answers ``meshplane analyze`` (live config, or files merged over it
before they are applied) and fills every object's ``status.validationMessages`` (``meshplane.statuswriter``).
It reads a :class:`~meshplane.model.config.ConfigSnapshot` and a
:class:`~meshplane.model.service.RegistrySnapshot` and does no I/O (an import-linter contract keeps it so).

    messages        the catalogue: Istio's codes, names, levels and templates, meshplane's MPL codes
    context         the input and the indexes every analyzer shares
    virtualservice  IST0101 (gateway, host, host:port, subset), IST0109, IST0130, IST0131, IST0132
    destinationrule IST0101 (host), IST0113, IST0128, IST0129
    gateway         IST0101 (selector), IST0104, IST0145, IST0162
    annotation      IST0108
    asm             MPL0001-MPL0004 (lane groups, TrafficLabels)
    run             ``analyze``: all of them, sorted
"""

from meshplane.analysis.context import AnalysisInput, SchemaError
from meshplane.analysis.messages import CATALOGUE, Level, Message, MessageType, Resource
from meshplane.analysis.run import analyze, worst

__all__ = ["CATALOGUE", "AnalysisInput", "Level", "Message", "MessageType", "Resource", "SchemaError", "analyze",
           "worst"]
