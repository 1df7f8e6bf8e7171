"""``meshplane server`` flags that become ServerOptions: the console's scrape networks."""

from __future__ import annotations

import pytest

from meshplane.cli import serverproc
from meshplane.cli.main import _networks, build_parser


def test_console_scrape_networks_are_repeatable_and_normalised() -> None:
    args = build_parser().parse_args(["server", "--console-scrape-network", "10.32.0.1/16",
                                      "--console-scrape-network", "fd00::/64"])
    assert _networks("--console-scrape-network", args.console_scrape_network) == ("10.32.0.0/16", "fd00::/64")
    assert _networks("--console-scrape-network", build_parser().parse_args(["server"]).console_scrape_network) == ()


def test_a_bad_console_scrape_network_says_which_flag() -> None:
    with pytest.raises(serverproc.ServerConfigError, match="--console-scrape-network: 'bridge' is not a network"):
        _networks("--console-scrape-network", ["bridge"])
