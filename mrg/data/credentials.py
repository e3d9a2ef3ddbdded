"""Credentials for credentialed downloads (PhysioNet), looked up without ever being shown or stored.

Order: the environment (``PHYSIONET_USERNAME`` / ``PHYSIONET_PASSWORD``), then ``~/.netrc`` (or the file
named by ``$NETRC``) for the download host, then a hidden prompt when the session is interactive.
``Credentials`` hides both fields from ``repr``/``str``, and no message mrg raises contains them.
"""

from __future__ import annotations

import getpass
import netrc
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mrg.errors import AuthError

USERNAME_ENV = "PHYSIONET_USERNAME"
PASSWORD_ENV = "PHYSIONET_PASSWORD"
PHYSIONET_HOST = "physionet.org"


@dataclass(frozen=True)
class Credentials:
    """A username and password for HTTP basic auth; neither appears in ``repr`` or ``str``."""

    username: str = field(repr=False)
    password: str = field(repr=False)
    origin: str = "environment"
    """Where they came from, for messages: ``environment``, ``netrc <path>`` or ``prompt``."""

    def as_tuple(self) -> tuple[str, str]:
        """``(username, password)`` for an HTTP client."""
        return (self.username, self.password)

    def __str__(self) -> str:
        return f"credentials from {self.origin}"

    def __reduce__(self) -> object:  # never let them be pickled into a file or sent to another process
        raise TypeError("Credentials cannot be pickled")


Prompter = Callable[[str, bool], str]
"""``prompter(label, hidden)`` returns what the user typed (``hidden`` for passwords)."""


def _terminal_prompt(label: str, hidden: bool) -> str:
    if hidden:
        return getpass.getpass(f"{label}: ", stream=sys.stderr)
    sys.stderr.write(f"{label}: ")
    sys.stderr.flush()
    return sys.stdin.readline().strip()


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _missing_message(host: str, what: str) -> str:
    return (
        f"{what} needs PhysioNet credentials: set {USERNAME_ENV} and {PASSWORD_ENV}, or add "
        f"'machine {host} login USER password PASS' to ~/.netrc (chmod 600), or run in a terminal to be asked; "
        "the account must be credentialed and have signed the project's data use agreement"
    )


def _from_netrc(host: str, path: Path) -> tuple[str, str] | None:
    if not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except netrc.NetrcParseError as err:
        # the parser's own message may quote a token of the file (a password), so it is not repeated here
        where = f"{path}, line {err.lineno}" if err.lineno else str(path)
        hint = "make it readable by you only (chmod 600)" if "permissive" in str(err.msg) else "fix the line's syntax"
        raise AuthError(f"{where}: cannot be read as a netrc file; {hint}") from None
    except OSError as err:
        raise AuthError(f"{path}: cannot be read ({err.strerror}); check its permissions") from None
    if entry is None:
        return None
    login, _account, password = entry
    if not login or not password:
        raise AuthError(f"{path}: the entry for machine {host} needs both a login and a password")
    return login, password


def resolve_credentials(
    host: str = PHYSIONET_HOST,
    *,
    what: str = "MIMIC-CXR",
    env: Mapping[str, str] | None = None,
    netrc_path: Path | None = None,
    interactive: bool | None = None,
    prompter: Prompter | None = None,
) -> Credentials:
    """Find credentials for ``host``: environment, then netrc, then a hidden prompt.

    Args:
        host: the download host; the netrc entry looked up is ``machine <host>``.
        what: the dataset, for messages.
        env: environment to read (default ``os.environ``).
        netrc_path: netrc file (default ``$NETRC`` or ``~/.netrc``).
        interactive: whether prompting is allowed (default: stdin is a terminal).
        prompter: how to ask (default: the terminal; the password is read without echo).

    Raises:
        AuthError: nothing was found and the session is not interactive, or the netrc file is malformed.
    """
    env = os.environ if env is None else env
    username, password = env.get(USERNAME_ENV, "").strip(), env.get(PASSWORD_ENV, "")
    if username and password:
        return Credentials(username, password, "environment")

    path = netrc_path or Path(env.get("NETRC") or Path.home() / ".netrc")
    if not username:
        found = _from_netrc(host, path)
        if found is not None:
            return Credentials(found[0], found[1], f"netrc {path}")

    if interactive is None:
        interactive = _interactive()
    if not interactive:
        if username:
            raise AuthError(f"{USERNAME_ENV} is set but {PASSWORD_ENV} is not; set both, or run in a terminal to be asked")
        raise AuthError(_missing_message(host, what))
    ask = prompter or _terminal_prompt
    origin = "environment and prompt" if username else "prompt"
    username = username or ask(f"PhysioNet username for {host}", False).strip()
    password = ask("PhysioNet password", True)
    if not username or not password:
        raise AuthError(_missing_message(host, what))
    return Credentials(username, password, origin)


def auth_failure_message(project: str, version: str, page_url: str, credentials: Credentials | None) -> str:
    """The one line shown when PhysioNet answers 401/403: what to check, never the credentials themselves."""
    origin = f" (from {credentials.origin})" if credentials is not None else ""
    return (
        f"PhysioNet refused the credentials{origin} for {project} {version}: check the username and password, "
        f"and that your account is credentialed and has signed the data use agreement for the project at {page_url}"
    )
