"""Every loading test runs offline: HF_HUB_OFFLINE=1 and any socket connection fails loudly."""

import socket

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise RuntimeError(f"a loading test tried to open a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def cache_dir(tmp_path):
    path = tmp_path / "hf-cache"
    path.mkdir()
    return path
