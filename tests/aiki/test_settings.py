"""Each setting of the server and the worker is declared once (`aiki._settings`): the
command line's options, their environment variables and docs/configuration.md all come
from the declarations."""

from __future__ import annotations

import attrs
import click
import pytest

from aiki._settings import declarations
from aiki.cli._main import main
from aiki.cli._settings import config_from, render
from aiki.server import ServerConfig
from aiki.worker import WorkerConfig
from tests._processes import ROOT

COMMANDS = [("server", ServerConfig), ("worker", WorkerConfig)]
OWN_OPTIONS = {"server": {"processes", "verbose"}, "worker": {"concurrency", "verbose", "target"}}
"""What the commands offer besides settings: how many processes, how much logging, the
worker's target and its concurrency (an attribute of the `aiki.Worker` served)."""


def _command(name: str) -> click.Command:
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command)
    return command


@pytest.mark.parametrize(("name", "config"), COMMANDS)
def test_the_command_offers_each_setting_once_as_declared(name: str, config: type) -> None:
    params = {param.name: param for param in _command(name).params}
    offered = [declared for declared in declarations(config) if declared.setting.cli]
    assert set(params) == {declared.name for declared in offered} | OWN_OPTIONS[name]
    for declared in offered:
        option = params[declared.name]
        assert isinstance(option, click.Option)
        assert option.opts == [declared.option]
        assert option.envvar == declared.env
        assert option.required == declared.required
        if declared.default not in (attrs.NOTHING, None, ()):
            assert option.default == declared.default
        kind = option.type
        if isinstance(kind, click.IntRange | click.FloatRange):
            low = declared.setting.gt if declared.setting.gt is not None else declared.setting.ge
            assert (kind.min, kind.max, kind.min_open) == (
                low,
                declared.setting.le,
                declared.setting.gt is not None,
            )
        else:
            assert (declared.setting.ge, declared.setting.gt, declared.setting.le) == (None,) * 3
    help_text = _command(name).get_help(click.Context(_command(name)))
    for declared in offered:
        assert help_text.count(f"{declared.option} ") == 1, declared.option
        if declared.env is not None:
            assert declared.env in help_text.replace("\n", "").replace(" ", "")


def test_settings_come_from_options_and_variables_and_bounds_are_the_configs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIKI_DATABASE_URL", "postgresql://db/aiki")
    monkeypatch.setenv("AIKI_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("AIKI_CLAIM_TIMEOUT", "12.5")
    monkeypatch.setenv("AIKI_ALLOWED_ORIGIN", "https://a.example https://b.example")
    monkeypatch.setenv("AIKI_INSECURE_NO_AUTH", "1")  # no variable may lower protection
    server = _command("server")
    context = server.make_context("server", ["--stall-after", "9", "--claim-timeout", "3"])
    config = config_from(ServerConfig, context.params)
    assert config.database_url == "postgresql://db/aiki"
    assert config.stall_after_seconds == 9.0
    assert config.claim_timeout_seconds == 3.0  # the option wins over the variable
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert config.insecure_no_auth is False
    assert config.timer_scan_seconds == ServerConfig(database_url="x", redis_url="redis://h:1"
                                                     ).timer_scan_seconds  # fmt: skip
    for args, says in ((["--port", "70000"], "0<=x<=65535"), (["--stall-after", "0"], "x>0")):
        with pytest.raises(click.BadParameter, match=says) as caught:
            server.make_context("server", list(args))
        assert caught.value.param is not None
        assert caught.value.param.opts == [args[0]]
    with pytest.raises(ValueError, match="stall_after_seconds"):
        ServerConfig(database_url="x", redis_url="redis://h:1", stall_after_seconds=0)


def test_a_worker_config_takes_its_key_from_the_variable_when_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIKI_API_KEY", "ak_from_env")
    monkeypatch.delenv("AIKI_CA_FILE", raising=False)
    config = WorkerConfig(redis_url="redis://127.0.0.1:6379/0")
    assert config.api_key == "ak_from_env"
    assert config.ca_file is None
    assert WorkerConfig(redis_url="redis://h:1", api_key="ak_given").api_key == "ak_given"
    assert "ak_from_env" not in repr(config)
    worker = _command("worker")
    monkeypatch.setenv("AIKI_REDIS_URL", "redis://127.0.0.1:6379/0")
    context = worker.make_context("worker", ["app:worker", "--heartbeat", "2"])
    made = config_from(WorkerConfig, context.params)
    assert (made.heartbeat_seconds, made.api_key) == (2.0, "ak_from_env")
    assert made.worker_id != WorkerConfig(redis_url="redis://h:1").worker_id  # its factory's


def test_every_config_field_is_declared_and_the_docs_are_current() -> None:
    for _, config in COMMANDS:
        assert len(declarations(config)) == len(attrs.fields(config))
    text = render()
    assert (ROOT / "docs" / "configuration.md").read_text() == text, (
        "docs/configuration.md is stale: run .venv/bin/python -c "
        "\"from aiki.cli._settings import render; print(render(), end='')\" "
        "> docs/configuration.md"
    )
    for command, config in COMMANDS:
        section = text.split(f"## `aiki {command}`")[1].split("\n## ")[0]
        for declared in declarations(config):
            assert section.count(f"`{declared.name}`") == 1
