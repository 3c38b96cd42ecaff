"""Key pairs, credentials directory, and the CURVE allow-list."""

from __future__ import annotations

import logging
import shutil
import stat

import pytest
import zmq
from helpers.link import wait_for

from edge.core.keys import (
    KeyFileError,
    credentials_dir,
    generate_keypair,
    load_keypair,
    load_public_key,
    make_curve_client,
    make_curve_server,
    start_authenticator,
)


def test_generate_then_load(tmp_path):
    public, secret = generate_keypair(tmp_path, "edge-a4")
    assert len(public) == 40 and len(secret) == 40
    assert load_keypair(tmp_path, "edge-a4") == (public, secret)
    assert load_public_key(tmp_path / "edge-a4.key") == public
    assert zmq.curve_public(secret) == public
    assert stat.S_IMODE((tmp_path / "edge-a4.key_secret").stat().st_mode) == 0o600
    assert b"secret-key" not in (tmp_path / "edge-a4.key").read_bytes()


def test_zmq_reads_our_files(tmp_path):
    public, secret = generate_keypair(tmp_path, "n1")
    assert zmq.auth.load_certificate(tmp_path / "n1.key_secret") == (public, secret)


def test_refuses_to_replace_a_key_unless_forced(tmp_path):
    first, _ = generate_keypair(tmp_path, "n1")
    with pytest.raises(FileExistsError, match="n1.key"):
        generate_keypair(tmp_path, "n1")
    second, _ = generate_keypair(tmp_path, "n1", overwrite=True)
    assert second != first


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_rejects_bad_names(tmp_path, name):
    with pytest.raises(ValueError, match="invalid key name"):
        generate_keypair(tmp_path, name)


def test_missing_key_names_the_file(tmp_path):
    with pytest.raises(KeyFileError, match=r"nope\.key_secret: key file not found"):
        load_keypair(tmp_path, "nope")


def test_corrupt_key_names_the_file(tmp_path):
    (tmp_path / "bad.key_secret").write_text("this is not a certificate\n")
    with pytest.raises(KeyFileError, match=r"bad\.key_secret: no public key"):
        load_keypair(tmp_path, "bad")
    (tmp_path / "short.key_secret").write_text(
        'curve\n    public-key = "abc"\n    secret-key = "def"\n'
    )
    with pytest.raises(KeyFileError, match=r"short\.key_secret: the public key is not"):
        load_keypair(tmp_path, "short")


def test_public_only_file_is_not_a_secret(tmp_path):
    generate_keypair(tmp_path / "src", "n1")
    shutil.copy(tmp_path / "src" / "n1.key", tmp_path / "n1.key_secret")
    with pytest.raises(KeyFileError, match="no secret key"):
        load_keypair(tmp_path, "n1")


def test_mismatched_pair_is_refused(tmp_path):
    pub_a, _ = generate_keypair(tmp_path / "a", "n1")
    _, sec_b = generate_keypair(tmp_path / "b", "n1")
    (tmp_path / "n1.key_secret").write_text(
        f'curve\n    public-key = "{pub_a.decode()}"\n    secret-key = "{sec_b.decode()}"\n'
    )
    with pytest.raises(KeyFileError, match="does not belong"):
        load_keypair(tmp_path, "n1")


def test_credentials_dir_prefers_systemd(monkeypatch, tmp_path):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert credentials_dir("/etc/x") == tmp_path.__class__("/etc/x")
    with pytest.raises(ValueError, match="no credentials directory"):
        credentials_dir(None)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert credentials_dir("/etc/x") == tmp_path
    assert credentials_dir(None) == tmp_path


def _server(ctx, tmp_path):
    public, secret = generate_keypair(tmp_path / "server", "collector")
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    make_curve_server(router, public, secret)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    return router, public, f"tcp://127.0.0.1:{port}"


def _client(ctx, tmp_path, name, server_public, endpoint, allowed_dir=None):
    public, secret = generate_keypair(tmp_path / "clients", name)
    if allowed_dir is not None:
        shutil.copy(tmp_path / "clients" / f"{name}.key", allowed_dir / f"{name}.key")
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.immediate = True  # nothing is queued for a connection that never completes
    make_curve_client(sock, public, secret, server_public)
    sock.connect(endpoint)
    return sock


def _send_when_connected(sock, frames, timeout=10.0):
    def attempt():
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    wait_for(attempt, timeout, "the CURVE handshake")


def test_allow_list_admits_known_keys_and_names_them(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    with zmq.Context() as ctx:
        router, server_public, endpoint = _server(ctx, tmp_path)
        auth = start_authenticator(ctx, allowed)
        try:
            good = _client(ctx, tmp_path, "edge-7", server_public, endpoint, allowed)
            _send_when_connected(good, [b"hello"])
            assert router.poll(5000)
            frames = router.recv_multipart(copy=False)
            assert frames[1].bytes == b"hello"
            assert frames[1].get("User-Id") == "edge-7"
            good.close()
        finally:
            router.close()
            auth.stop()


def test_unknown_key_gets_nothing_and_is_logged(tmp_path, caplog):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    caplog.set_level(logging.WARNING, logger="edge.core.keys")
    with zmq.Context() as ctx:
        router, server_public, endpoint = _server(ctx, tmp_path)
        auth = start_authenticator(ctx, allowed)
        try:
            stranger = _client(ctx, tmp_path, "stranger", server_public, endpoint)
            wait_for(lambda: auth.allow_list.denied >= 1, 10, "the refusal")
            with pytest.raises(zmq.Again):
                stranger.send(b"let me in", zmq.NOBLOCK)
            assert not router.poll(200)
            assert any(
                "not on the allow-list" in r.getMessage() and r.levelno == logging.WARNING
                for r in caplog.records
            )
            stranger.close()
        finally:
            router.close()
            auth.stop()


def test_key_added_later_is_let_in_without_restart(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    with zmq.Context() as ctx:
        router, server_public, endpoint = _server(ctx, tmp_path)
        auth = start_authenticator(ctx, allowed)
        try:
            late = _client(ctx, tmp_path, "late", server_public, endpoint)
            wait_for(lambda: auth.allow_list.denied >= 1, 10, "the first refusal")
            shutil.copy(tmp_path / "clients" / "late.key", allowed / "late.key")
            # ZeroMQ gives up on a connection whose key was refused; the edge's sender
            # connects again by itself (tested with the sender), here we do it by hand.
            late.disconnect(endpoint)
            late.connect(endpoint)
            _send_when_connected(late, [b"now?"])
            assert router.poll(5000)
            assert router.recv_multipart()[1] == b"now?"
            late.close()
        finally:
            router.close()
            auth.stop()


def test_removed_key_is_refused_at_its_next_connection(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    with zmq.Context() as ctx:
        router, server_public, endpoint = _server(ctx, tmp_path)
        auth = start_authenticator(ctx, allowed)
        try:
            sock = _client(ctx, tmp_path, "gone", server_public, endpoint, allowed)
            _send_when_connected(sock, [b"1"])
            assert router.poll(5000)
            router.recv_multipart()
            sock.close()
            (allowed / "gone.key").unlink()
            again = ctx.socket(zmq.DEALER)
            again.linger = 0
            again.immediate = True
            make_curve_client(again, *load_keypair(tmp_path / "clients", "gone"), server_public)
            again.connect(endpoint)
            wait_for(lambda: auth.allow_list.denied >= 1, 10, "the refusal")
            with pytest.raises(zmq.Again):
                again.send(b"2", zmq.NOBLOCK)
            again.close()
        finally:
            router.close()
            auth.stop()


def test_corrupt_allow_list_file_is_skipped(tmp_path, caplog):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "junk.key").write_text("nonsense")
    generate_keypair(allowed / "src", "ok")
    shutil.copy(allowed / "src" / "ok.key", allowed / "ok.key")
    caplog.set_level(logging.ERROR, logger="edge.core.keys")
    with zmq.Context() as ctx:
        auth = start_authenticator(ctx, allowed)
        try:
            assert len(auth.allow_list) == 1
            assert any("junk.key" in r.getMessage() for r in caplog.records)
        finally:
            auth.stop()
