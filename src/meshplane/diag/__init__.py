"""Diagnosis: what the commands ``proxy-config``, ``proxy-status``, ``describe`` and ``version`` show, as pure
functions over what was read (an Envoy admin's config dump, the API's objects, the management API's proxy list).

Why pure and separate from the CLI: the same tables serve the CLI and tests that feed them a real Envoy's dump, and
nothing here can reach a network or a file; ``meshplane.cli.diag_cmds`` does the reading.
"""

from meshplane.diag.configdump import ConfigDump, ConfigDumpError
from meshplane.diag.tables import render_table

__all__ = ["ConfigDump", "ConfigDumpError", "render_table"]
