"""Files reloaded when they change (client CAs, CRLs, a JWKS file, the keyring): a reload
that takes long delays no one but the caller that started it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kfr_grpc.watched import WatchedFiles


def test_a_slow_reload_delays_no_other_caller(tmp_path: Path):
    path = tmp_path / "ca.crl"
    path.write_text("first")
    entered, release = threading.Event(), threading.Event()

    def load() -> str:
        text = path.read_text()
        if text != "first":  # the reload, not the first load
            entered.set()
            release.wait(10)
        return text

    watched = WatchedFiles("a CRL", [path], load, check_seconds=0)
    path.write_text("second, and longer")
    reloading = threading.Thread(target=watched.get)
    reloading.start()
    try:
        assert entered.wait(10)
        started = time.monotonic()
        assert watched.get() == "first"  # the value as it is, at once
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
        reloading.join()
    assert watched.get() == "second, and longer"
