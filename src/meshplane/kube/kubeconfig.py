"""A member cluster's kubeconfig: parsed, and its credentials known so that no message ever shows them.

Why apart from the watch loop: the credentials are the one secret a member cluster brings; :func:`secrets_of`
finds every value to scrub, and every error message of the source (log lines, the MemberCluster's status) is
scrubbed of them (``KubeClusterSource.scrub``) before anyone sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


class KubeSourceError(Exception):
    """A request to a member cluster's API server failed; the message is safe to show (no credentials)."""


def parse_kubeconfig(text: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise KubeSourceError("kubeconfig is not valid YAML") from e
    if not isinstance(doc, dict) or not doc.get("clusters"):
        raise KubeSourceError("kubeconfig has no clusters")
    return doc


def secrets_of(kubeconfig: Mapping[str, Any]) -> list[str]:
    """Every credential-looking value of a kubeconfig, to scrub from messages."""
    out: list[str] = []
    for user in kubeconfig.get("users") or []:
        u = user.get("user") if isinstance(user, Mapping) else None
        if isinstance(u, Mapping):
            for key in ("token", "password", "client-key-data", "client-certificate-data"):
                if u.get(key):
                    out.append(str(u[key]))
    return [s for s in out if len(s) >= 4]
