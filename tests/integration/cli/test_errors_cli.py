"""How every command fails: one line on stderr, naming what to fix, and the exit status."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

#: Seconds a failing command may take (Python start-up, no network).
CLI_TIMEOUT = 30.0


async def resofleet(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RESOFLEET_")}
    full["RESOFLEET_AUDIT_DIR"] = str(cwd / "audit")
    full.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resofleet", *args, cwd=cwd, env=full,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(CLI_TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("command", "speaker"),
    [
        (("gateway", "--amqp", "amqp://nobody@127.0.0.1:1/"), "resofleet"),
        (("up",), "resofleet"),
        (("agent", "--amqp", "amqp://nobody@127.0.0.1:1/"), "resofleet agent"),
        (("notifier", "--amqp", "amqp://nobody@127.0.0.1:1/"), "resofleet notifier"),
        (("token", "issue", "--role", "viewer"), "resofleet"),
        (("audit", "tail"), "resofleet audit tail"),
    ],
    ids=["gateway", "up", "agent", "notifier", "token-issue", "audit-tail"],
)
async def test_a_bad_config_is_one_line_naming_the_file_and_key(
    tmp_path: Path, command: tuple[str, ...], speaker: str
) -> None:
    """Every command that reads the configuration refuses a bad value the same way: exit 2,
    one line naming the file, the key and the value, nothing on stdout."""
    config = tmp_path / "fleet.toml"
    config.write_text("[gateway.limits]\ncommand_burst = 0\n", encoding="utf-8")
    code, out, err = await resofleet(*command, "--config", str(config), cwd=tmp_path)
    assert (code, out) == (2, "")
    problem = "gateway.limits.command_burst must be a whole number of at least 1, not 0"
    assert err == f"{speaker}: {config}: {problem}\n"


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        ("", "{config}: no [[webhooks]] to deliver to"),
        ('[[webhooks]]\nname = "ops"\nurl = "https://hooks.example.com/{secret}"\n',
         "{config}: webhooks[0] needs a signing secret: set secret, secret_env or secret_file"),
        ('[[webhooks]]\nname = "ops"\nurl = "https://hooks.example.com/{secret}"\nsecret_env = "UNSET_HOOK_SECRET"\n',
         "{config}: webhooks[0] needs a signing secret: set secret, secret_env or secret_file"),
        ('[[webhooks]]\nname = "ops"\nurl = "hooks.example.com/{secret}"\nformat = "discord"\n',
         "{config}: webhooks[0].url must be an http:// or https:// URL"),
        ('[[webhooks]]\nname = "ops"\nformat = "discord"\n',
         "{config}: webhooks[0] needs a URL: set url, url_env or url_file"),
        ('[[webhooks]]\nname = "ops"\nurl_file = "{config}.url"\nformat = "discord"\n',
         "{config}: webhooks[0] the file {config}.url must hold an http:// or https:// URL"),
    ],
    ids=["no-webhooks", "no-secret", "secret-env-unset", "bad-url", "no-url", "bad-url-file"],
)
async def test_the_notifier_refuses_webhooks_it_cannot_use(tmp_path: Path, toml: str, line: str) -> None:
    """`resofleet notifier` stops with one line before it connects anywhere; a webhook's
    URL (a Discord URL is a credential) is never repeated."""
    secret = "d1sc0rd-t0ken-in-the-url"
    config = tmp_path / "fleet.toml"
    config.write_text(toml.format(secret=secret, config=config), encoding="utf-8")
    Path(f"{config}.url").write_text(f"hooks.example.com/{secret}\n", encoding="utf-8")  # no scheme
    code, out, err = await resofleet(
        "notifier", "--config", str(config), "--amqp", "amqp://nobody@127.0.0.1:1/", cwd=tmp_path
    )
    assert (code, out) == (2, "")
    assert err == f"resofleet notifier: {line.format(config=config)}\n"
    assert secret not in err


async def test_a_misspelt_key_is_refused_with_the_right_spellings(tmp_path: Path) -> None:
    """A typo in a key stops the command instead of being ignored (here: a gateway that
    would otherwise have run open)."""
    config = tmp_path / "fleet.toml"
    config.write_text(f'[gateway]\nsecrte = "{"s" * 43}"\n', encoding="utf-8")
    code, _, err = await resofleet("up", "--config", str(config), cwd=tmp_path)
    assert code == 2
    assert err.startswith(f"resofleet: {config}: gateway.secrte is not a known key (known: host, port, secret, ")
    assert "s" * 43 not in err and len(err.splitlines()) == 1


async def test_an_unknown_log_level_is_refused(tmp_path: Path) -> None:
    """RESOFLEET_LOG_LEVEL with a typo is an error, not a silent fallback to INFO."""
    code, out, err = await resofleet("token", "secret", cwd=tmp_path, env={"RESOFLEET_LOG_LEVEL": "verbose"})
    assert (code, out) == (2, "")
    assert err == (
        "resofleet: RESOFLEET_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not 'verbose'\n"
    )


async def test_an_unreachable_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """A failure at run time (here the broker) exits 1, its last line saying why, with no
    traceback (the lines before it are the broker client's own log)."""
    config = tmp_path / "fleet.toml"
    config.write_text('[agent]\naudit_log = false\n[[servers]]\nid = "one"\nruntime = "emulator"\n')
    code, _, err = await resofleet(
        "agent", "--config", str(config), "--amqp", "amqp://nobody@127.0.0.1:1/", cwd=tmp_path
    )
    assert code == 1 and "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("resofleet agent: Cannot reach the message broker at amqp://")


@pytest.mark.parametrize(
    ("command", "speaker"),
    [(("up",), "resofleet"), (("agent", "--amqp", "amqp://nobody@127.0.0.1:1/"), "resofleet agent")],
    ids=["up", "agent"],
)
async def test_an_unknown_event_loop_is_refused(tmp_path: Path, command: tuple[str, ...], speaker: str) -> None:
    """RESOFLEET_EVENT_LOOP with a typo stops a service before it starts anything: exit 2,
    one line naming the variable and the loops it takes."""
    config = tmp_path / "fleet.toml"
    config.write_text('[[servers]]\nid = "one"\nruntime = "emulator"\n')
    code, out, err = await resofleet(
        *command, "--config", str(config), cwd=tmp_path, env={"RESOFLEET_EVENT_LOOP": "tokio"}
    )
    assert (code, out) == (2, "")
    assert err == f"{speaker}: RESOFLEET_EVENT_LOOP must be one of auto, uvloop, asyncio, not 'tokio'\n"
