"""Who hears of a failed or crashed flow run: a Prefect notification block, when one is set.

`aigc up --notify URL` saves a `CustomWebhookNotificationBlock` called `aigc-notify` that POSTs
JSON to URL; `aigc up --notify BLOCK` (a block slug such as `slack-webhook/ops`) uses a block the
user made. Either is recorded in `<home>/services/notify.json`, which the flows' `on_failure`
and `on_crashed` hooks read, so runs of the embedded CLI and of the worker both notify. A hook
never raises: a broken notifier is logged, and the run's own state stays what it was.

    python -m flows.notify save TARGET --home HOME   # what `aigc up --notify` runs
    python -m flows.notify test --home HOME          # send a test message
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from aigc_core.atomic import write_bytes_atomic
from aigc_core.paths import Home

log = logging.getLogger(__name__)

WEBHOOK_BLOCK = "aigc-notify"
CONFIG = "notify.json"


def config_file(home: Home) -> Path:
    return home.root / "services" / CONFIG


def configured_block(home: Home) -> str | None:
    """The notification block's slug (`TYPE/NAME`) recorded for this home, or None."""
    try:
        return json.loads(config_file(home).read_text()).get("block") or None
    except (OSError, ValueError, AttributeError):
        return None


def save(home: Home, target: str) -> str:
    """Record where failures go: a webhook URL (saved as a block) or an existing block's slug;
    returns the slug. ValueError for a target that is neither."""
    if target.startswith(("http://", "https://")):
        slug = _save_webhook(target)
    elif target.count("/") == 1 and all(target.split("/")):
        from prefect.blocks.core import Block

        try:
            Block.load(target)  # fails now, not at 2 a.m., when it does not exist
        except ValueError as e:
            raise ValueError(f"--notify: no notification block {target!r}: {e}") from None
        slug = target
    else:
        raise ValueError(
            f"--notify takes a webhook URL (http:// or https://) or a notification block's slug "
            f"TYPE/NAME (e.g. slack-webhook/ops), got {target!r}"
        )
    path = config_file(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps({"block": slug}) + "\n").encode())
    return slug


def _save_webhook(url: str) -> str:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    if not urlparse(url).hostname:
        raise ValueError(f"--notify: {url!r} has no host")
    block = CustomWebhookNotificationBlock(
        name=WEBHOOK_BLOCK,
        url=url,
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
        # the user named this URL: a webhook on their own network (or this machine) is allowed
        allow_private_urls=True,
    )
    block.save(WEBHOOK_BLOCK, overwrite=True)
    return f"custom-webhook/{WEBHOOK_BLOCK}"


def message(flow, flow_run, state) -> tuple[str, str]:
    """The subject and body of a failure notice: which run, its state, why, and where to look."""
    subject = f"aigc: flow run {flow_run.name} {state.name.lower()}"
    lines = [
        f"flow: {flow.name}",
        f"run: {flow_run.name} ({flow_run.id})",
        f"state: {state.name}: {state.message or ''}".rstrip(": "),
    ]
    params = {k: v for k, v in (flow_run.parameters or {}).items() if v is not None}
    if params:
        lines.append("parameters: " + json.dumps(params, sort_keys=True, default=str))
    ui = os.environ.get("PREFECT_UI_URL") or _ui_from_api(os.environ.get("PREFECT_API_URL"))
    if ui:
        lines.append(f"details: {ui.rstrip('/')}/runs/flow-run/{flow_run.id}")
    return subject, "\n".join(lines)


def _ui_from_api(api: str | None) -> str | None:
    return api.removesuffix("/").removesuffix("/api") if api else None


def on_failure(flow, flow_run, state) -> None:
    """The `on_failure` and `on_crashed` hook: send the notice through the configured block."""
    home = Home.resolve((flow_run.parameters or {}).get("home"))
    slug = configured_block(home)
    if slug is None:
        return
    try:
        from prefect.blocks.core import Block

        subject, body = message(flow, flow_run, state)
        Block.load(slug).notify(body=body, subject=subject)
        log.info("sent a failure notice through %s", slug)
    except Exception as e:  # noqa: BLE001 - never let the notifier change the run's outcome
        log.warning("could not send the failure notice through %s: %s", slug, e)


HOOKS = {"on_failure": [on_failure], "on_crashed": [on_failure]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.notify")
    parser.add_argument("command", choices=["save", "test"])
    parser.add_argument("target", nargs="?")
    parser.add_argument("--home", default=None)
    args = parser.parse_args(argv)
    home = Home.resolve(args.home)
    if args.command == "save":
        try:
            print(save(home, args.target or ""))
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    slug = configured_block(home)
    if slug is None:
        print("error: no notification block is configured (aigc up --notify)", file=sys.stderr)
        return 2
    from prefect.blocks.core import Block

    Block.load(slug).notify(body="a test notice from aigc", subject="aigc: test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
