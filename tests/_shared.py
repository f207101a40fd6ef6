"""Fixtures shared by several test folders; a folder's conftest imports the ones it wants (autouse).

`one_thread`: tiny models run on one intra-op thread. At d_model 8-256 a 2-thread OpenMP pool only adds
synchronisation, which on a shared 2-core machine cost up to ~100x per op (1.7 ms vs 140 ms per
forward). The caller's count is restored after each test.
`no_network`: HF_HUB_OFFLINE=1, and any socket connection fails loudly.
"""

import socket

import pytest

from hooked_bilinear.threads import num_threads


@pytest.fixture(autouse=True)
def one_thread():
    with num_threads(1):
        yield


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise RuntimeError(f"a test tried to open a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
