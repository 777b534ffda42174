"""An API key sent through every path that stores, logs or exports text is found nowhere."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from fakeserver import FakeServer, PlannedReply, openai_error
from integration.cli import run_trunkline
from integration.test_cli import write_project
from otlp_receiver import OtlpReceiver
from trunkline.config import Settings
from trunkline.errors import CallError
from trunkline.logs import configure_logging
from trunkline.providers.base import Provider
from trunkline.recording import recording
from trunkline.redaction import add_pattern, redact
from trunkline.routing import Router
from trunkline.tracing import add_exporter, remove_exporter, start_run
from trunkline.tracing.otlp import OtlpExporter
from trunkline.types.calls import ModelResponse
from unit.helpers import ListExporter

# No known key format: only the registered secret can catch it.
KEY = "tl-secret-0123456789abcdef0123"


class ParrotProvider(Provider):
    """Replies with the last message, as a model told to repeat it would."""

    name = "parrot"

    async def complete(self, request):  # noqa: ANN001, ANN201
        return ModelResponse(text=f"You said: {request.messages[-1].content}", model="parrot")


class EchoingProvider(Provider):
    """Fails with an exception whose text carries the key in a URL, as some clients do."""

    name = "echo"

    async def complete(self, request):  # noqa: ANN001, ANN201
        raise RuntimeError(f"GET https://models.example/v1/chat?api_key={KEY} failed: reset")


@pytest.fixture
def restore_logging():  # noqa: ANN201
    logger = logging.getLogger("trunkline")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers, logger.level, logger.propagate = saved[0], saved[1], saved[2]


async def test_key_is_found_nowhere(fake_server: FakeServer, tmp_path: Path, monkeypatch, restore_logging) -> None:
    monkeypatch.setenv("TL_TEST_KEY", KEY)
    fake_server.plan(
        PlannedReply(
            status=401,
            body=openai_error(
                f"Incorrect API key provided: {KEY}. Request: {fake_server.openai_base_url}"
                f"/chat/completions?key={KEY} with Authorization: Bearer {KEY}",
                code="invalid_api_key",
            ),
        )
    )
    settings = Settings.model_validate(
        {
            "deployments": {
                "remote": {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "base_url": fake_server.openai_base_url,
                    "api_key_env": "TL_TEST_KEY",
                },
                "echo": {"provider": "fake", "model": "m"},
                "parrot": {"provider": "fake", "model": "parrot"},
            },
            "routes": {"main": {"deployments": ["remote", "echo"], "max_attempts": 1}},
            "default_route": "main",
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
        }
    )
    logs = io.StringIO()
    configure_logging("DEBUG", "json", logs)
    exported = ListExporter()
    add_exporter(exported)
    receiver = OtlpReceiver()
    receiver.start()
    otlp = OtlpExporter(receiver.endpoint, capture_content=True, interval_s=0.05)
    add_exporter(otlp)
    router = Router(settings, providers={"echo": EchoingProvider(), "parrot": ParrotProvider()})
    try:
        with recording(settings), start_run("redaction", run_id="redaction-run"):
            with pytest.raises(CallError) as caught:
                await router.complete("hi")
            # A user who pastes a key into a prompt gets it back, but no record keeps it.
            repeated = await router.complete(f"my key is {KEY}", route="parrot")
            assert repeated.output == f"You said: my key is {KEY}"
        assert otlp.flush()
    finally:
        remove_exporter(exported)
        remove_exporter(otlp)
        otlp.close()
        receiver.stop()
        await router.aclose()

    assert fake_server.requests[0].headers.get("authorization") == f"Bearer {KEY}"
    texts = {
        "exception": str(caught.value),
        "causes": " ".join(str(cause) for cause in caught.value.causes),
        "log lines": logs.getvalue(),
        "exported records": "".join(record.model_dump_json() for record in exported.calls),
        "exported spans": "".join(span.model_dump_json() for span in exported.spans),
        "OTLP spans with contents": str([received.attributes for received in receiver.spans]),
        "store file": (tmp_path / "store.db").read_bytes().decode("latin-1"),
    }
    assert "[REDACTED]" in texts["exported records"]
    assert "You said: my key is [REDACTED]" in texts["OTLP spans with contents"]
    assert exported.calls[1].messages[-1].content == "my key is [REDACTED]"
    assert len(json.loads(exported.calls[0].model_dump_json())["attempts"]) == 2
    for where, text in texts.items():
        assert KEY not in text, f"the key leaked into the {where}"


@pytest.mark.parametrize(
    "text",
    [
        "api-key: 0123456789abcdef0123456789abcdef",
        "x-api-key: sk-ant-api03-abcdefghijklmnop",
        '{"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}',
        "https://example.openai.azure.com/?api-version=1&key=abcdef0123456789",
        "token AIzaSyA1234567890abcdefghijklmnopqrs",
        "API request to http://user:Pw0rdSecret@127.0.0.1:9/api failed",
        "redis://:Pw0rdSecret@127.0.0.1:6379/0",
    ],
)
def test_header_and_key_forms_are_redacted(text) -> None:
    redacted = redact(text)
    assert "[REDACTED]" in redacted
    leaked = ("0123456789abcdef0123", "abcdefghijklmnop", "dXNlcjpw", "abcdef0123456789", "SyA1234567890", "Pw0rdSecret")
    assert not any(part in redacted for part in leaked)


def test_addresses_without_passwords_are_kept() -> None:
    for text in ("write to bob@example.com", "http://127.0.0.1:8080/v1@latest", "git@github.com:org/repo"):
        assert redact(text) == text


def test_configured_patterns_are_redacted() -> None:
    add_pattern(r"acme_[0-9a-f]{12}")
    assert redact("token acme_0123456789ab in use") == "token [REDACTED] in use"
    with pytest.raises(ValueError, match="not a valid regular expression"):
        add_pattern("(")


def test_patterns_from_the_configuration(tmp_path: Path) -> None:
    from trunkline.config import load_settings
    from trunkline.errors import ConfigError

    file = tmp_path / "trunkline.toml"
    file.write_text('redact_patterns = ["cust-[0-9]{8}"]\n')
    load_settings(file)
    assert redact("customer cust-12345678 called") == "customer [REDACTED] called"
    file.write_text('redact_patterns = ["(unclosed"]\n')
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        load_settings(file)


def test_run_rows_and_failure_listing_are_redacted(tmp_path: Path) -> None:
    """Row outputs and row errors pass the same redaction as call records."""
    write_project(tmp_path, "my key is sk-proj-AbCdEf0123456789xyz,yes\ncustomer cust-12345678 fails,no\n")
    config = tmp_path / "trunkline.toml"
    config.write_text('redact_patterns = ["cust-[0-9]{8}"]\n' + config.read_text())
    # The post step repeats the question, and raises with it when it names a customer.
    (tmp_path / "flow" / "tools.py").write_text(
        "def pick(answer, question):\n"
        "    if 'customer' in question:\n"
        "        raise ValueError(f'cannot label {question}')\n"
        "    return {'label': question}\n"
    )
    completed = run_trunkline(tmp_path, "run", "flow", "--json")
    assert completed.returncode == 1
    stored = (tmp_path / ".trunkline" / "trunkline.db").read_bytes().decode("latin-1")
    for secret in ("sk-proj-AbCdEf0123456789xyz", "cust-12345678"):
        assert secret not in stored
        assert secret not in completed.stderr
    assert "cannot label customer [REDACTED] fails" in completed.stderr


def test_keys_of_unused_deployments_are_redacted(tmp_path: Path, monkeypatch) -> None:
    from trunkline.config import load_settings

    monkeypatch.setenv("TL_UNUSED_KEY", "zzgw-unused-secret-998877")
    file = tmp_path / "trunkline.toml"
    file.write_text(
        '[deployments.spare]\nprovider = "openai"\nmodel = "m"\napi_key_env = "TL_UNUSED_KEY"\n'
    )
    load_settings(file)
    assert redact("token zzgw-unused-secret-998877 seen") == "token [REDACTED] seen"
