"""One analysis: every analyzer over one input, the messages sorted and de-duplicated."""

from __future__ import annotations

from meshplane.analysis import annotation, asm, destinationrule, gateway, virtualservice
from meshplane.analysis import messages as m
from meshplane.analysis.context import AnalysisInput, Context
from meshplane.analysis.messages import Level, Message, Resource


def analyze(inp: AnalysisInput, *, namespace: str | None = None, root_namespace: str = "istio-system",
            threshold: Level = Level.INFO) -> list[Message]:
    """The messages about objects of ``namespace`` (None: all), at least as bad as ``threshold``."""
    ctx = Context(inp)
    for err in inp.schema_errors:
        ctx.messages.append(Message(m.SCHEMA_VALIDATION_ERROR, Resource(err.kind, err.namespace, err.name,
                                                                         err.origin), (err.error,)))
    virtualservice.analyze(ctx)
    destinationrule.analyze(ctx, root_namespace)
    gateway.analyze(ctx)
    annotation.analyze(ctx)
    asm.analyze(ctx, root_namespace)
    out = {(msg.type.code, msg.resource, msg.text): msg for msg in ctx.messages
           if (namespace is None or msg.resource.namespace == namespace) and msg.type.level.rank >= threshold.rank}
    return sorted(out.values(), key=lambda msg: msg.sort_key)


def worst(messages: list[Message]) -> Level | None:
    return max((msg.type.level for msg in messages), key=lambda lv: lv.rank, default=None)


__all__ = ["analyze", "worst"]
