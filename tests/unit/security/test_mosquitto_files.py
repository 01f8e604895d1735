"""The Mosquitto password file ($7$, as mosquitto_passwd writes it) and the ACL file."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from anmin.security import Credentials, Inventory, acl_file, hash_password, password_file
from anmin.security.credentials import SecurityError
from anmin.security.mosquitto import verify_password
from wire import topics


def test_the_hash_is_mosquittos_pbkdf2_sha512_format() -> None:
    hashed = hash_password("secret", salt=b"0123456789ab", iterations=101)
    empty, seven, iterations, salt, digest = hashed.split("$")
    assert (empty, seven, iterations) == ("", "7", "101")
    assert salt == "MDEyMzQ1Njc4OWFi"
    assert len(digest) == 88  # base64 of 64 bytes
    assert verify_password("secret", hashed)
    assert not verify_password("Secret", hashed)
    assert hash_password("secret") != hash_password("secret"), "a fresh salt each time"


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
def test_hashes_agree_with_mosquitto_passwd(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "alice", "s3cret"], check=True)
    user, hashed = path.read_text().strip().split(":", 1)
    assert user == "alice"
    assert verify_password("s3cret", hashed)
    # With mosquitto_passwd's salt and iterations, ours is the same hash, byte for byte.
    _, _, iterations, salt, _ = hashed.split("$")
    ours = hash_password("s3cret", salt=base64.b64decode(salt), iterations=int(iterations))
    assert ours == hashed


def test_the_password_file_has_one_line_per_user_and_no_secret() -> None:
    credentials = Credentials({"b@gw@s": "secret-b", "a@gw@s": "secret-a"})
    text = password_file(credentials)
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines] == ["a@gw@s", "b@gw@s"]
    assert "secret-a" not in text and "secret-b" not in text
    assert verify_password("secret-a", lines[0].split(":", 1)[1])
    with pytest.raises(SecurityError):
        password_file(Credentials({"a:b": "x"}))


def test_the_acl_file_grants_each_user_exactly_its_access() -> None:
    principals = Inventory("s1", {"gw-1": ("gas-1",)}).principals()
    text = acl_file(principals)
    blocks = {
        block.split("\n", 1)[0].removeprefix("user "): block for block in text.split("\nuser ")[1:]
    }
    assert set(blocks) == {p.username for p in principals}
    for principal in principals:
        access = principal.access()
        lines = [
            line for line in blocks[principal.username].splitlines() if line.startswith("topic")
        ]
        expected = [f"topic write {t}" for t in access.publish]
        expected += [f"topic read {t}" for t in access.subscribe]
        assert lines == expected
    assert "pattern" not in text, "explicit ids only: no %u/%c substitutions"
    assert "readwrite" not in text
    assert f"topic read {topics.hub_online()}" in blocks["gw-1@s1"]
