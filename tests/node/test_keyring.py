"""`stack operator rotate`: a new barrier key term, and secrets written under the
old and the new term both still open after a restart."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from cluster import FORM_TIMEOUT, Harness, wait_until


@pytest.mark.timeout(120)
def test_keyring_rotation_keeps_old_and_new_secrets_readable(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    n1 = h.bootstrap()
    first_token = n1.printed("join token:")[0]

    # Without the root token these operator endpoints are closed.
    assert n1.request("POST", "/v1/operator/keyring/rotate", auth=False).status == 401
    assert n1.request("POST", "/v1/operator/keyring/rotate", token="st.nope").status == 403

    r = n1.request("POST", "/v1/operator/keyring/rotate")
    assert r.status == 200, r.body
    assert r.json()["term"] == 2
    # The join secret was encrypted under term 1; a new one is encrypted under term 2.
    assert n1.request("GET", "/v1/operator/token/join").json()["token"] == first_token
    rotated = n1.request("POST", "/v1/operator/token/rotate-join").json()["token"]
    assert rotated != first_token and rotated.split(".")[1] == first_token.split(".")[1]
    assert n1.request("POST", "/v1/operator/keyring/rotate").json()["term"] == 3

    n1.signal(signal.SIGTERM)
    assert n1.wait_exit(30) == 0
    n1.start()
    n1.wait_up()
    wait_until(lambda: n1.status()["role"] == "leader" and not n1.status()["sealed"],
               FORM_TIMEOUT, "n1 to unseal and lead again")  # fmt: skip
    # Both ciphertexts open after the restart: the keyring came back with every term.
    assert n1.request("GET", "/v1/operator/token/join").json()["token"] == rotated
    assert n1.request("POST", "/v1/operator/keyring/rotate").json()["term"] == 4

    # A node joins with the rotated token (its secret is decrypted with term 2).
    n2 = h.node("n2", join=[n1], extra=["--token", rotated]).start()
    n2.wait_up()
    wait_until(lambda: n2.status()["cluster_id"] == n1.status()["cluster_id"], FORM_TIMEOUT,
               "n2 to join with the rotated token")  # fmt: skip
