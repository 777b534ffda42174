"""Loading trunkline.toml: defaults, merging and error messages."""

from __future__ import annotations

import pytest

from trunkline.config import LOCAL_MODEL, Deployment, Settings, builtin_defaults, load_settings
from trunkline.errors import ConfigError


def test_defaults_without_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRUNKLINE_CONFIG", raising=False)
    monkeypatch.delenv("TRUNKLINE_DATABASE_URL", raising=False)
    settings = load_settings()
    assert settings.deployments["local"].provider == "local"
    assert settings.route("local").deployments == ["local"]
    assert settings.prices[LOCAL_MODEL].input_per_mtok == 0.0
    assert settings.database_url() == "sqlite:///.trunkline/trunkline.db"


def test_file_merges_over_defaults(tmp_path) -> None:
    file = tmp_path / "trunkline.toml"
    file.write_text(
        """
default_route = "cheap"

[deployments.mini]
provider = "openai"
model = "gpt-4o-mini"
api_key_env = "OPENAI_API_KEY"

[routes.cheap]
deployments = ["mini", "local"]
max_attempts = 2
"""
    )
    settings = load_settings(file)
    assert set(settings.deployments) == {"local", "mini"}
    assert settings.route("cheap").deployments == ["mini", "local"]
    assert settings.route("mini").deployments == ["mini"]


def test_error_names_key_and_line(tmp_path) -> None:
    file = tmp_path / "trunkline.toml"
    file.write_text('[routes.main]\ndeployments = ["local"]\nmax_attempts = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    message = str(caught.value)
    assert "routes.main.max_attempts" in message
    assert "(line 3)" in message


def test_unknown_deployment_in_route(tmp_path) -> None:
    file = tmp_path / "trunkline.toml"
    file.write_text('[routes.main]\ndeployments = ["nowhere"]\n')
    with pytest.raises(ConfigError, match="names deployment 'nowhere'"):
        load_settings(file)


def test_invalid_toml(tmp_path) -> None:
    file = tmp_path / "trunkline.toml"
    file.write_text("[routes\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(file)


def test_unknown_route() -> None:
    settings = Settings.model_validate(builtin_defaults())
    with pytest.raises(ConfigError, match="unknown route or deployment 'gpt-9'"):
        settings.route("gpt-9")


def test_missing_api_key_env(monkeypatch) -> None:
    monkeypatch.delenv("TRUNKLINE_TEST_KEY", raising=False)
    deployment = Deployment(provider="openai", model="gpt-4o", api_key_env="TRUNKLINE_TEST_KEY")
    with pytest.raises(ConfigError, match="TRUNKLINE_TEST_KEY is not set"):
        deployment.api_key()


def test_config_env_var_must_exist(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TRUNKLINE_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="TRUNKLINE_CONFIG"):
        load_settings()


def test_unknown_key_lists_valid_keys(tmp_path) -> None:
    file = tmp_path / "trunkline.toml"
    file.write_text('[routes.main]\ndeployments = ["local"]\nretries = 3\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    message = str(caught.value)
    assert "routes.main.retries (line 3)" in message
    assert "valid keys here:" in message
    assert "max_attempts" in message


def load_text(tmp_path, text: str) -> str:
    file = tmp_path / "trunkline.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    return str(caught.value)


def test_line_of_a_table_whose_name_prefixes_another(tmp_path) -> None:
    message = load_text(
        tmp_path,
        '[deployments.ab]\nprovider = "fake"\nmodel = "m"\nrpm = 5\n\n'
        '[deployments.a]\nprovider = "fake"\nmodel = "m"\nrpm = 0\n',
    )
    assert "deployments.a.rpm (line 9)" in message


def test_line_of_a_quoted_table_name(tmp_path) -> None:
    message = load_text(tmp_path, "[deployments.'a']\nprovider = \"fake\"\nmodel = \"m\"\nrpm = true\n")
    assert "deployments.a.rpm (line 4)" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[routes.r]\ndeployments = ["local"]\ndowngrade_to = ["zzz"]\n', "routes.r.downgrade_to names deployment 'zzz'"),
        (
            '[deployments.b]\nprovider = "fake"\nmodel = "m"\n'
            '[routes.r]\ndeployments = ["local"]\ncontent_filter_fallbacks = ["b"]\n',
            "not in the route's deployments",
        ),
        ('default_route = "nope"\n', "default_route 'nope' is neither a route nor a deployment"),
        ("[budgets]\nrun_usd = inf\n", "budgets.run_usd (line 2): Input should be a finite number"),
        ('[budgets]\ntags = { "team" = 5.0 }\n', "must read name=value"),
        ('[budgets]\ntags = { "team=a" = -5.0 }\n', "budgets.tags.team=a"),
        ('[deployments.local]\nprovider = "local"\nmodel = "m"\nrpm = "100"\n', "deployments.local.rpm"),
    ],
)
def test_policy_values_are_checked(tmp_path, text, expected) -> None:
    message = load_text(tmp_path, text)
    assert expected in message
    assert ": Value error" not in message


def test_tracing_unknown_key_lists_valid_keys(tmp_path) -> None:
    message = load_text(tmp_path, '[tracing]\nendpoint = "http://127.0.0.1:4318"\n')
    assert "tracing.endpoint (line 2)" in message
    assert "otlp_endpoint" in message
    assert "capture_content" in message


def test_tracing_protocol_must_be_known(tmp_path) -> None:
    message = load_text(tmp_path, '[tracing]\notlp_protocol = "http/json"\n')
    assert "tracing.otlp_protocol" in message
    assert "grpc" in message
