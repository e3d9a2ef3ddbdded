"""PhysioNet credentials: environment, then netrc, then a prompt; never shown, never picklable."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from mrg.data.credentials import Credentials, auth_failure_message, resolve_credentials
from mrg.errors import AuthError

USER, PASSWORD = "alice-researcher-7", "pw-Zq8!secret-42"


def _netrc(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "netrc"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_environment_comes_first(tmp_path: Path) -> None:
    netrc = _netrc(tmp_path, "machine physionet.org login other password other-pw\n")
    creds = resolve_credentials(env={"PHYSIONET_USERNAME": USER, "PHYSIONET_PASSWORD": PASSWORD},
                                netrc_path=netrc, interactive=False)
    assert creds.as_tuple() == (USER, PASSWORD)
    assert creds.origin == "environment"


def test_netrc_entry_for_the_host(tmp_path: Path) -> None:
    netrc = _netrc(tmp_path, f"machine example.org login x password y\nmachine physionet.org login {USER} password {PASSWORD}\n")
    creds = resolve_credentials(env={}, netrc_path=netrc, interactive=False)
    assert creds.as_tuple() == (USER, PASSWORD)
    assert creds.origin == f"netrc {netrc}"
    # the host of a custom --base-url is looked up instead
    assert resolve_credentials("example.org", env={}, netrc_path=netrc, interactive=False).as_tuple() == ("x", "y")


def test_netrc_from_the_NETRC_variable(tmp_path: Path) -> None:
    netrc = _netrc(tmp_path, f"machine physionet.org login {USER} password {PASSWORD}\n")
    assert resolve_credentials(env={"NETRC": str(netrc)}, interactive=False).username == USER


def test_prompt_when_interactive(tmp_path: Path) -> None:
    asked: list[tuple[str, bool]] = []

    def prompter(label: str, hidden: bool) -> str:
        asked.append((label, hidden))
        return PASSWORD if hidden else USER

    creds = resolve_credentials(env={}, netrc_path=tmp_path / "none", interactive=True, prompter=prompter)
    assert creds.as_tuple() == (USER, PASSWORD) and creds.origin == "prompt"
    assert [hidden for _, hidden in asked] == [False, True]  # the password is asked without echo


def test_username_from_environment_password_from_prompt(tmp_path: Path) -> None:
    creds = resolve_credentials(env={"PHYSIONET_USERNAME": USER}, netrc_path=tmp_path / "none", interactive=True,
                                prompter=lambda label, hidden: PASSWORD)
    assert creds.as_tuple() == (USER, PASSWORD)


def test_nothing_found_and_not_interactive(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="PHYSIONET_USERNAME and PHYSIONET_PASSWORD.*netrc.*data use agreement"):
        resolve_credentials(env={}, netrc_path=tmp_path / "none", interactive=False)
    with pytest.raises(AuthError, match="PHYSIONET_PASSWORD is not"):
        resolve_credentials(env={"PHYSIONET_USERNAME": USER}, netrc_path=tmp_path / "none", interactive=False)


def test_malformed_netrc_error_does_not_quote_the_file(tmp_path: Path) -> None:
    netrc = _netrc(tmp_path, f"machine physionet.org login {USER} password {PASSWORD} bogus{PASSWORD}\n")
    with pytest.raises(AuthError) as info:
        resolve_credentials(env={}, netrc_path=netrc, interactive=False)
    message = str(info.value)
    assert str(netrc) in message and PASSWORD not in message and USER not in message


def test_incomplete_netrc_entry(tmp_path: Path) -> None:
    netrc = _netrc(tmp_path, f"machine physionet.org login {USER}\n")
    with pytest.raises(AuthError, match="needs both a login and a password"):
        resolve_credentials(env={}, netrc_path=netrc, interactive=False)


def test_credentials_never_show_or_pickle() -> None:
    creds = Credentials(USER, PASSWORD, "environment")
    for text in (repr(creds), str(creds), f"{creds}", auth_failure_message("mimic-cxr", "2.1.0", "https://x/", creds)):
        assert USER not in text and PASSWORD not in text
    with pytest.raises(TypeError):
        pickle.dumps(creds)
    assert "data use agreement" in auth_failure_message("mimic-cxr", "2.1.0", "https://x/", creds)
