"""mrg.distributed: leaving a torch.distributed group when a command ends."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import torch

from mrg.cli import main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def process_group(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process joined to a gloo group of one (left again afterwards, whatever the test did)."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def test_a_command_leaves_the_process_group_it_ran_in(process_group: None) -> None:
    """A torchrun process must not exit with gloo's threads alive (it aborts after writing its outputs)."""
    with pytest.raises(SystemExit) as exited:
        main(["methods"])
    assert exited.value.code == 0
    assert not torch.distributed.is_initialized()


def test_a_failing_command_leaves_it_too(process_group: None) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["generate", "--checkpoint", "/nonexistent/run"])
    assert exited.value.code == 1
    assert not torch.distributed.is_initialized()


def test_a_worker_of_a_multi_process_launch_ends_at_once_with_its_output_flushed() -> None:
    """WORLD_SIZE > 1: the streams are flushed and the process ends with the code, skipping interpreter teardown."""
    import os
    import subprocess
    import sys

    script = ("import atexit, sys\n"
              "from mrg.distributed import end_worker_process\n"
              "atexit.register(lambda: print('teardown ran'))\n"
              "print('written', end='')\n"
              "sys.stderr.write('to stderr')\n"
              "end_worker_process(3)\n"
              "print('not reached')\n")
    for world, code, out in (("2", 3, "written"), ("1", 0, "writtennot reached\nteardown ran\n")):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "WORLD_SIZE": world}, check=False)
        assert (done.returncode, done.stdout, done.stderr) == (code, out, "to stderr")
