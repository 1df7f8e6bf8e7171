"""Two meshes starting at once never take the same loopback range: the second octet is claimed with a lock held
for the supervisor's life (runtime.supervisor.choose_octet), besides the check that its ports are free."""

from __future__ import annotations

from pathlib import Path

from meshplane.runtime.home import Home
from meshplane.runtime.supervisor import choose_octet


def test_a_claimed_octet_is_skipped_until_its_claim_is_released(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    first, claim = choose_octet(home)
    assert claim is not None and 10 <= first < 250
    # The same home again (a second mesh whose ports are not bound yet): the claimed octet is skipped.
    second, other = choose_octet(home)
    assert second != first and other is not None
    other.close()
    claim.close()
    again, third = choose_octet(home)  # released: the home's own octet is free to take again
    assert again == first and third is not None
    third.close()
