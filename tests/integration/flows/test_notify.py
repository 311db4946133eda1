"""Failed flow runs notify through the configured Prefect notification block."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from aigc_core.paths import Home
from flows import notify
from flows.nightly import nightly_retrain


@pytest.fixture()
def webhook():
    """A local webhook receiver: the JSON bodies it was sent."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


def test_a_failed_night_sends_a_notice_to_the_configured_webhook(tmp_path, webhook):
    url, received = webhook
    home = Home.resolve(tmp_path)
    assert notify.save(home, url) == "custom-webhook/aigc-notify"
    missing = tmp_path / "no-such-folder"
    with pytest.raises(Exception, match="no-such-folder"):
        nightly_retrain(dataset="mine", path=str(missing), preset="smoke", home=str(tmp_path))
    assert len(received) == 1
    notice = received[0]
    assert notice["subject"].startswith("aigc: flow run nightly-dcgan-mine-")
    assert notice["subject"].endswith("failed")
    assert "no-such-folder" in notice["text"] and "flow: nightly-retrain" in notice["text"]


def test_without_a_notifier_a_failed_night_only_fails(tmp_path, webhook):
    _, received = webhook
    with pytest.raises(Exception, match="no-such-folder"):
        nightly_retrain(dataset="mine", path=str(tmp_path / "no-such-folder"), home=str(tmp_path))
    assert received == []


def test_a_broken_notifier_does_not_change_the_runs_outcome(tmp_path):
    home = Home.resolve(tmp_path)
    notify.save(home, "http://127.0.0.1:9/nothing-listens-here")
    with pytest.raises(Exception, match="no-such-folder"):
        nightly_retrain(dataset="mine", path=str(tmp_path / "no-such-folder"), home=str(tmp_path))


def test_notify_refuses_a_target_that_is_neither_url_nor_block(tmp_path):
    with pytest.raises(ValueError, match="webhook URL"):
        notify.save(Home.resolve(tmp_path), "not a target")
    assert notify.configured_block(Home.resolve(tmp_path)) is None


def test_notify_takes_an_existing_blocks_slug_and_refuses_a_missing_one(tmp_path, webhook):
    url, _ = webhook
    home = Home.resolve(tmp_path)
    notify.save(home, url)
    assert notify.save(home, "custom-webhook/aigc-notify") == "custom-webhook/aigc-notify"
    with pytest.raises(ValueError, match="no notification block 'custom-webhook/nosuch'"):
        notify.save(home, "custom-webhook/nosuch")
    assert notify.configured_block(home) == "custom-webhook/aigc-notify"  # unchanged
