"""The options every command that runs one session takes (``run``, ``console``), defined once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from actors.guest.balloon import DRIVERS
from run.session.logs import LEVELS


def session_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--seed``, ``--log``, ``--duration``, ``--set``, ``--driver``, ``--level``."""
    for option in reversed((
        click.option("--seed", type=click.IntRange(0, (1 << 63) - 1),
                     help="Session seed (default: scenario's)."),
        click.option("--log", "log_path", type=click.Path(path_type=Path),
                     help="Write the JSON-lines log here."),
        click.option("--duration", help="Virtual duration, e.g. 30s (overrides the scenario)."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override a scenario field, e.g. --set guest.memory=2GiB "
                          "(repeatable)."),
        click.option("--driver", type=click.Choice(list(DRIVERS)),
                     help="The balloon driver variant (= --set guest.driver=D)."),
        click.option("--level", type=click.Choice(list(LEVELS)), default="info",
                     show_default=True, help="Lowest log level recorded."),
    )):
        f = option(f)
    return f
