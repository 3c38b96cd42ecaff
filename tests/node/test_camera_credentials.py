"""Camera passwords from credentials files, and the RTSP probe that tells a wrong password
from a wrong address or path, against a camera's RTSP front door on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.link import free_port
from helpers.rtsp_fake import FakeRtspServer
from helpers.stand_ins import idle_engines

from edge.node.config import EdgeConfig
from edge.node.service import EdgeService
from edge.node.sources import SourceError
from edge.node.sources.credentials import camera_url, read_credentials, with_credentials
from edge.node.sources.rtsp_probe import probe


def test_the_password_comes_from_the_file_quoted_into_the_url(tmp_path):
    secret = tmp_path / "gate-cam"
    secret.write_text("op@site:p:a/ss w%rd\n")
    assert read_credentials(secret) == ("op@site", "p:a/ss w%rd")
    url = with_credentials("rtsp://10.0.0.21:8554/stream1?channel=1", secret)
    assert url == "rtsp://op%40site:p%3Aa%2Fss%20w%25rd@10.0.0.21:8554/stream1?channel=1"
    assert camera_url("rtsp://cam/s", None, None) == "rtsp://cam/s"


@pytest.mark.parametrize(("content", "why"), [
    (b"no-colon-here\n", "want one line 'user:password'"),
    (b":nouser\n", "want one line 'user:password'"),
    (b"a:b\nc:d\n", "want one line 'user:password'"),
    (b"\xff\xfe:x", "not UTF-8"),
    (b"a:" + b"x" * 5000, "over 4096 bytes"),
])
def test_a_bad_credentials_file_is_an_error_naming_it_and_never_its_content(tmp_path, content,
                                                                            why):
    path = tmp_path / "cam"
    path.write_bytes(content)
    with pytest.raises(SourceError) as err:
        with_credentials("rtsp://cam.local/s", path)
    assert why in str(err.value) and str(path) in str(err.value)
    assert "nouser" not in str(err.value) and "c:d" not in str(err.value)


def test_a_missing_file_a_url_with_its_own_user_or_no_directory_are_refused(tmp_path):
    with pytest.raises(SourceError, match="cannot read"):
        with_credentials("rtsp://cam.local/s", tmp_path / "absent")
    (tmp_path / "cam").write_text("u:p\n")
    with pytest.raises(SourceError, match="has a user already") as err:
        with_credentials("rtsp://admin:inline@cam.local/s", tmp_path / "cam")
    assert "inline" not in str(err.value)
    with pytest.raises(SourceError, match="no credentials directory"):
        camera_url("rtsp://cam.local/s", "cam", None)


def test_the_node_opens_a_camera_with_its_credentials_file(tmp_path, monkeypatch):
    """Under systemd the file comes through LoadCredential= ($CREDENTIALS_DIRECTORY)."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "north-cam").write_text("admin:s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    with FakeRtspServer(user="admin", password="s3cret") as server:
        config = EdgeConfig.model_validate({
            "state_dir": str(tmp_path / "state"),
            "cameras": [{"id": "north", "source": server.url("/main"),
                         "credentials": "north-cam"}]})
        service = EdgeService(config, engines=idle_engines())
        source = service.open_camera(config.cameras[0])
        try:
            assert source.source_id == "north" and "s3cret" not in repr(source)
            # the fake serves no media: the stream fails after the camera let us in
            assert source.wait_for_state("dead", timeout=20)
            assert "describes its stream, but the stream could not be played" in (
                source.health().last_error or "")
        finally:
            source.close()
        assert server.authorizations and all("s3cret" not in a for a in server.authorizations)
        service.outbox.close()


@pytest.mark.parametrize("scheme", ["basic", "digest"])
def test_the_probe_answers_basic_and_digest_and_tells_the_failures_apart(scheme):
    with FakeRtspServer(user="admin", password="pw", scheme=scheme) as server:
        assert probe(server.url("/main", "admin:pw")).ok
        wrong = probe(server.url("/main", "admin:nope"))
        assert (wrong.ok, wrong.status) == (False, 401) and "refused the user" in wrong.reason
        none = probe(server.url("/main"))
        assert none.status == 401 and "asks for a user and password" in none.reason
        path = probe(server.url("/other", "admin:pw"))
        assert path.status == 404 and "no stream at this path" in path.reason
    refused = probe(f"rtsp://127.0.0.1:{free_port()}/main")
    assert refused.status == 0 and "nothing listens" in refused.reason
    assert probe("http://127.0.0.1/x") is None and probe("rtsps://cam/x") is None


def test_check_config_warns_of_a_world_readable_credentials_file(tmp_path, capsys):
    from edge.cli import main

    creds = tmp_path / "creds"
    creds.mkdir()
    secret = creds / "cam"
    secret.write_text("u:p\n")
    os.chmod(secret, 0o644)
    pictures = tmp_path / "pics"
    pictures.mkdir()
    path = Path(tmp_path / "edge.yaml")
    path.write_text(f"state_dir: {tmp_path / 'state'}\nlink:\n  credentials_dir: {creds}\n"
                    f"cameras:\n  - id: c\n    source: rtsp://127.0.0.1:{free_port()}/s\n"
                    "    credentials: cam\n")
    main(["check-config", str(path), "--offline"])
    out = capsys.readouterr().out
    assert f"{secret} is readable by anyone on this machine (chmod 600)" in out
