"""``GET /health`` tells load balancers and operators the truth, on a real ``hub serve``: 503 with
the reason while the store cannot record messages (its disk full) or the hub's signing certificate
is out of its dates, 200 again once it can, without a restart; and ``hub serve`` neither starts nor
reloads onto a signing certificate that has expired or is not valid yet."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree

from hub.config import load_config
from hub.keys import issue, write_certificate
from hub.trust import Verifier, load_certificates

from .support import REPO, HubProcess, Sender, mounted_tmpfs, wait_until, write_config
from .test_reload import REFUSED, code_of, sighup, signing_certificate


def health(hub: HubProcess) -> httpx.Response:
    return httpx.get(hub.url + "/health", timeout=10)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs."""
    with mounted_tmpfs(tmp_path / "small", "2m") as folder:
        yield folder


def fill(folder: Path) -> Path:
    """A file that takes every byte left on the file system of ``folder``."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = 1 << 16
        while chunk:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                chunk //= 2
    finally:
        os.close(fd)
    return filler


def test_health_says_503_while_the_disk_of_the_store_is_full_and_200_once_space_is_made(tmp_path: Path, small_disk: Path) -> None:
    """/health said 200 "ok" while every sender got ERR50 "the disk is full"."""
    config = write_config(tmp_path, store=f"sqlite:///{small_disk}/hub.db", max_bytes=200_000)
    moit = Sender(load_config(config), "VN-MOIT")
    with HubProcess(config) as hub:
        ok = health(hub)
        assert ok.status_code == 200 and ok.json()["status"] == "ok", ok.text
        assert hub.post(moit.message()).status_code == 200

        filler = fill(small_disk)
        answers = []
        for _ in range(30):  # the first that needs a new block of the disk fails
            answers.append(hub.post(moit.message()))
            if answers[-1].status_code != 200:
                break
        refused = answers[-1]
        assert refused.status_code == 503 and code_of(refused) == "ERR50", [a.status_code for a in answers]
        assert f"the store {small_disk}/hub.db: its disk is full" in hub.log.read_text()
        down = health(hub)
        assert down.status_code == 503, down.text
        said = down.json()
        assert said["status"] == "cannot record" and said["party"] == "VN-NSW", said
        assert said["reason"].startswith(f"the store {small_disk}/hub.db: its disk is full"), said
        assert health(hub).status_code == 503  # no probe of its own clears it

        filler.unlink()
        up = health(hub)  # space made: no message needed to find out
        assert up.status_code == 200 and up.json()["status"] == "ok", up.text
        accepted = hub.post(moit.message())
        assert accepted.status_code == 200, accepted.text
        assert health(hub).status_code == 200
        assert hub.terminate() == 0


def test_health_says_503_before_a_write_fails_when_the_disk_has_no_room_for_one_message(tmp_path: Path, small_disk: Path) -> None:
    """Seen by every process on the host (``--workers``), not only the one whose write failed."""
    config = write_config(tmp_path, store=f"sqlite:///{small_disk}/hub.db", max_bytes=1_500_000)
    with HubProcess(config, "--workers", "2") as hub:
        st = os.statvfs(small_disk)
        (small_disk / "ballast").write_bytes(b"\0" * (st.f_bfree * st.f_frsize - 1_200_000))  # 1.2 MB left
        for _ in range(6):  # a new connection each time: the kernel spreads them over both workers
            down = health(hub)
            assert down.status_code == 503, down.text
            reason = down.json()["reason"]
            assert reason.startswith(f"the store {small_disk}/hub.db: its disk has ") and "bytes free, less than one message of " \
                "the largest size the hub takes may need (1500000 bytes, [hub] max_message_bytes)" in reason, reason
        (small_disk / "ballast").unlink()
        assert all(health(hub).status_code == 200 for _ in range(6))


def certificate(tmp_path: Path, name: str, start: datetime, days: int = 1) -> Path:
    """A certificate for the hub's own key, valid ``days`` from ``start``."""
    key = serialization.load_pem_private_key((tmp_path / "keys" / "hub.key").read_bytes(), None)
    path = tmp_path / "keys" / f"{name}.crt"
    write_certificate(path, issue(key, name, days=days, not_before=start))  # type: ignore[arg-type]
    return path


def signing_with(config: Path, path: Path) -> None:
    keys = config.parent / "keys"
    text = config.read_text()
    assert text.count(f'certificate = "{keys}/hub.crt"') == 1
    config.write_text(text.replace(f'certificate = "{keys}/hub.crt"', f'certificate = "{path}"'))


@pytest.mark.parametrize("late", [True, False], ids=["expired", "not-valid-yet"])
def test_hub_serve_refuses_to_start_with_a_signing_certificate_out_of_its_dates(tmp_path: Path, late: bool) -> None:
    """It started and signed every receipt with a certificate `hub check` refuses."""
    config = write_config(tmp_path)
    now = datetime.now(timezone.utc)
    start = now - timedelta(days=10) if late else now + timedelta(days=3)
    path = certificate(tmp_path, "VN-NSW dated", start)
    signing_with(config, path)
    out = subprocess.run([sys.executable, "-m", "hub.cli", "serve", "--config", str(config)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    dates = f"valid {start:%Y-%m-%d %H:%M} to {start + timedelta(days=1):%Y-%m-%d %H:%M} UTC"
    when = f"expired on {start + timedelta(days=1):%Y-%m-%d %H:%M} UTC" if late else f"is not valid until {start:%Y-%m-%d %H:%M} UTC"
    assert lines[0].startswith(f"error: cannot serve with {path} (hub.certificate in {config}): the signing certificate "
                               "CN=VN-NSW dated (serial "), lines[0]
    assert dates in lines[0] and when in lines[0], lines[0]


def test_a_reload_onto_an_expired_signing_certificate_keeps_the_keys_in_use(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    moit = Sender(load_config(config), "VN-MOIT")
    current = load_certificates(tmp_path / "keys" / "hub.crt")[0]
    expired = certificate(tmp_path, "VN-NSW expired", datetime.now(timezone.utc) - timedelta(days=10))
    with HubProcess(config) as hub:
        signing_with(config, expired)
        sighup(hub, REFUSED)
        refusals = [line for line in hub.log.read_text().splitlines() if REFUSED in line]
        assert len(refusals) == 1 and f"{expired}: hub.certificate: the signing certificate CN=VN-NSW expired (serial " in refusals[0], refusals
        assert " UTC) expired on " in refusals[0], refusals[0]
        receipt = hub.post(moit.message())
        assert receipt.status_code == 200 and signing_certificate(receipt.content) == current
        Verifier().verify(etree.fromstring(receipt.content), [current], "the hub")
        assert health(hub).status_code == 200


def test_health_says_503_once_the_signing_certificate_in_use_expires(tmp_path: Path) -> None:
    """A hub that can only give receipts partners refuse should get no traffic."""
    config = write_config(tmp_path)
    ends = datetime.now(timezone.utc) + timedelta(seconds=10)
    signing_with(config, certificate(tmp_path, "VN-NSW brief", ends - timedelta(days=1)))
    with HubProcess(config) as hub:
        assert health(hub).status_code == 200
        assert wait_until(lambda: health(hub).status_code == 503, 30), health(hub).text
        said = health(hub).json()
        assert said["status"] == "certificate not valid" and said["party"] == "VN-NSW", said
        assert said["reason"].startswith("the signing certificate CN=VN-NSW brief (serial "), said
        assert f"expired on {ends:%Y-%m-%d %H:%M} UTC" in said["reason"] and said["reason"].endswith("renew it and reload (SIGHUP)"), said
        assert time.time() > ends.replace(microsecond=0).timestamp()  # not before it expired (to the second, as X.509 says)
