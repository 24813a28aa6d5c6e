"""The offline guard is on in the tests and in the notebook kernels they start."""

from __future__ import annotations

import socket
import threading

import nbformat
import pytest

from xattr_nb import offline


def test_the_guard_is_on_in_the_test_process():
    assert offline.blocked()


@pytest.mark.parametrize("address", [("93.184.216.34", 80), ("10.255.255.1", 443), ("2001:db8::1", 80)])
def test_outside_connections_are_refused(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s, pytest.raises(offline.NetworkBlockedError, match="offline"):
        s.connect(address)
    with socket.socket(family, socket.SOCK_STREAM) as s, pytest.raises(offline.NetworkBlockedError):
        s.connect_ex(address)


def test_create_connection_by_name_is_refused():
    with pytest.raises(offline.NetworkBlockedError):
        socket.create_connection(("huggingface.co", 443), timeout=1)


def test_loopback_stays_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    got = []
    t = threading.Thread(target=lambda: got.append(server.accept()[0].recv(5)))
    t.start()
    with socket.create_connection(("localhost", port), timeout=5) as c:
        c.sendall(b"hello")
    t.join(5)
    server.close()
    assert got == [b"hello"]


@pytest.mark.slow
def test_the_guard_reaches_notebook_kernels(tmp_path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("import socket, xattr_nb.offline as o\nassert o.blocked()"),
        nbformat.v4.new_code_cell("socket.create_connection(('93.184.216.34', 80), timeout=1)"),
    ]
    with pytest.raises(CellExecutionError, match="NetworkBlockedError"):
        NotebookClient(nb, timeout=60, kernel_name="python3").execute(cwd=str(tmp_path))
