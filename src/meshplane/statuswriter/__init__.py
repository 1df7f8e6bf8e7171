"""The status writer: each Istio and ASM object's ``Reconciled`` condition and ``validationMessages``
(:mod:`meshplane.statuswriter.writer`), from :mod:`meshplane.analysis` after each change is pushed."""

from meshplane.statuswriter.writer import RECONCILED, StatusWriter, WriterSettings, render_status, status_kinds

__all__ = ["RECONCILED", "StatusWriter", "WriterSettings", "render_status", "status_kinds"]
