"""The web console: a live mesh topology from the proxies' own metrics, and read-only pages over the existing APIs.

``topology`` is pure (metrics text -> edges); ``scraper`` reads the proxies while someone looks; ``web`` serves the
page (``static/``, plain HTML and JavaScript with the cytoscape graph library that ``scripts/setup`` installs into
``static/vendor/``) and ``/management/v1/console/topology``. ``cli.serverproc`` wires it to the xDS server's
proxies.
"""

from meshplane.console.scraper import MetricsScraper, ScraperSettings, Target
from meshplane.console.web import TOPOLOGY_PATH, console_routes

__all__ = ["TOPOLOGY_PATH", "MetricsScraper", "ScraperSettings", "Target", "console_routes"]
