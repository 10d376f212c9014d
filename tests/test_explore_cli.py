"""`vae explore` on the command line: the URL on stdout, errors in one line before any server, a warning for an
address others can reach, and a quiet exit on Ctrl-C that leaves the port free."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import vaecli.commands.explore as explore_command
from vaecli.errors import CheckpointError

from tests.helpers.cli_checks import one_error_line


def _taken_port() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


def _free(port: int) -> bool:
    """Whether a new server could listen on `port` (as `vae explore` binds: past closed connections' TIME_WAIT)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_port_in_use_is_one_line_suggesting_another(cli, tiny_model):
    holder, port = _taken_port()
    with holder:
        result = cli("explore", "-m", tiny_model, "--port", str(port), "--device", "cpu")
    line = one_error_line(result)
    assert result.exit_code == 2 and result.stdout == ""
    assert f"--port {port} is in use" in line and "--port N" in line and "--port 0" in line


def test_a_model_that_cannot_be_read_is_one_line_before_any_server(cli, tmp_path):
    """The port stays free: the file is refused before anything listens."""
    bad = tmp_path / "notes.safetensors"
    bad.write_text("not a checkpoint")
    holder, port = _taken_port()
    holder.close()
    result = cli("explore", "-m", bad, "--port", str(port))
    assert result.exit_code == 2 and "notes.safetensors" in one_error_line(result) and result.stdout == ""
    missing = cli("explore", "-m", tmp_path / "absent.safetensors", "--port", str(port))
    assert missing.exit_code == 2 and "no such checkpoint" in one_error_line(missing)
    assert _free(port)


def test_an_address_that_is_not_here_is_one_line(cli, tiny_model):
    result = cli("explore", "-m", tiny_model, "--host", "no-such-host.invalid", "--port", "0")
    assert result.exit_code == 2 and "--host no-such-host.invalid" in one_error_line(result)


def test_weights_that_fail_to_load_stop_the_server_with_one_line(cli, tiny_model, monkeypatch):
    """The header was fine, so the page was already served; the one line comes, and the port is let go."""
    opened = []

    def failing_loader(path, device, facts):
        def load():
            time.sleep(0.2)
            raise CheckpointError(f"{path}: its weights do not match its config; the file is damaged")
        return load

    monkeypatch.setattr(explore_command, "_session_loader", failing_loader)
    monkeypatch.setattr(explore_command.webbrowser, "open", opened.append)
    result = cli("explore", "-m", tiny_model, "--port", "0", "--open", "-q")
    assert result.exit_code == 2 and "weights do not match" in one_error_line(result)
    url = result.stdout.strip()
    assert url.startswith("http://127.0.0.1:") and opened == [url]
    assert _free(int(url.rsplit(":", 1)[1].strip("/")))


def _start(args: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "vaecli", "explore", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(120)
    if not found or not found[0].startswith("http://"):
        process.kill()
        pytest.fail(f"no URL on stdout: {found} {process.stderr.read()}")
    return process, found[0].strip()


def test_it_serves_until_ctrl_c_then_exits_130_quietly_and_frees_the_port(tiny_model, tmp_path):
    env = {**os.environ, "VAE_DEVICE": "cpu"}
    process, url = _start(["-m", str(tiny_model), "--port", "0", "--dataset", "digits", "--limit", "50"], env)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            assert response.status == 200 and b"vae explore" in response.read()
        with urllib.request.urlopen(url + "api/model", timeout=60) as response:
            assert b'"latent_dim":4' in response.read()
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "error" not in stderr and "Traceback" not in stderr, stderr
    assert _free(int(url.rsplit(":", 1)[1].strip("/")))


def test_another_address_is_served_with_a_one_line_warning(tiny_model):
    env = {**os.environ, "VAE_DEVICE": "cpu"}
    process, url = _start(["-m", str(tiny_model), "--host", "0.0.0.0", "--port", "0", "--limit", "50"], env)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert url.startswith("http://0.0.0.0:") and process.returncode == 143
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0] and "--host" in warnings[0], stderr
