"""The prompt registry: immutable versions, labels with history, references, rendering, YAML files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from trunkline.errors import ConfigError
from trunkline.prompts import PromptContent, PromptRegistry, parse_reference, prompt_yaml, pull, push, render
from trunkline.store import open_store
from trunkline.store.tables import prompt_versions


@pytest.fixture
def registry(store_url: str):  # noqa: ANN201
    store = open_store(store_url)
    yield PromptRegistry(store)
    store.dispose()


def content(user: str = "Classify: {{ message }}", **fields) -> PromptContent:  # noqa: ANN003
    return PromptContent.model_validate(
        {"messages": [{"role": "system", "content": "You sort messages."}, {"role": "user", "content": user}], **fields}
    )


def test_same_content_is_same_version(registry: PromptRegistry) -> None:
    first, created = registry.create_version("triage", content(), author="ana")
    again, created_again = registry.create_version("triage", content(), author="bo")
    assert (first.version, created) == (1, True)
    assert (again.version, created_again) == (1, False)
    assert again.author == "ana"


def test_changed_content_is_next_version(registry: PromptRegistry) -> None:
    registry.create_version("triage", content())
    second, created = registry.create_version("triage", content("Intent of: {{ message }}"))
    assert (second.version, created) == (2, True)
    # Going back to old content returns the old version, not a third.
    back, created_back = registry.create_version("triage", content())
    assert (back.version, created_back) == (1, False)


def test_versions_are_immutable(registry: PromptRegistry) -> None:
    first, _ = registry.create_version("triage", content())
    registry.create_version("triage", content("Intent of: {{ message }}"))
    assert registry.get("triage@1") == first
    # The store itself rejects a second row with the same number.
    with pytest.raises(IntegrityError), registry.store.engine.begin() as connection:
        connection.execute(
            prompt_versions.insert().values(
                name="triage", version=1, content_hash="x", messages=[], variables={},
                metadata={}, created_at=first.created_at,
            )
        )
    assert registry.get("triage@1").content_hash == first.content_hash


def test_metadata_and_variables_are_kept(registry: PromptRegistry) -> None:
    version, _ = registry.create_version(
        "triage",
        content(
            variables={"message": "string"},
            output_schema={"type": "object"},
            metadata={"purpose": "triage", "output_format": "json", "models": ["smollm2"], "note": "n"},
        ),
        author="ana",
    )
    stored = registry.get("triage")
    assert stored.content.variables == {"message": "string"}
    assert stored.content.output_schema == {"type": "object"}
    assert stored.content.metadata.models == ["smollm2"]
    assert stored.author == "ana"
    assert stored.content_hash == version.content_hash
    assert len(stored.content_hash) == 64


def test_undeclared_template_variable_is_rejected() -> None:
    with pytest.raises(ValueError, match="message, which variables does not declare"):
        content(variables={"other": "string"})


def test_labels_move_with_history(registry: PromptRegistry) -> None:
    registry.create_version("triage", content())
    registry.create_version("triage", content("Intent of: {{ message }}"))
    registry.set_label("triage", 1, "production", moved_by="ana")
    assert registry.get("triage:production").version == 1
    move = registry.set_label("triage", 2, "production", moved_by="bo")
    assert (move.from_version, move.to_version) == (1, 2)
    assert registry.get("triage:production").version == 2
    assert registry.get("triage@2").labels == ("production",)
    history = registry.label_history("triage", "production")
    assert [(m.from_version, m.to_version, m.moved_by) for m in history] == [(None, 1, "ana"), (1, 2, "bo")]
    assert history[0].moved_at <= history[1].moved_at


def test_missing_prompt_version_and_label(registry: PromptRegistry) -> None:
    registry.create_version("triage", content())
    with pytest.raises(ConfigError, match="'nope' is not in the registry"):
        registry.get("nope")
    with pytest.raises(ConfigError, match="has no version 5; its versions are 1 to 1"):
        registry.get("triage@5")
    with pytest.raises(ConfigError, match="has no label 'staging'"):
        registry.get("triage:staging")
    with pytest.raises(ConfigError, match="has no version 3"):
        registry.set_label("triage", 3, "staging")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("triage", ("triage", None, None)), ("triage@3", ("triage", 3, None)), ("a/b:production", ("a/b", None, "production"))],
)
def test_parse_reference(text: str, expected: tuple) -> None:
    reference = parse_reference(text)
    assert (reference.name, reference.version, reference.label) == expected
    assert str(reference) == text


@pytest.mark.parametrize("text", ["triage@x", "triage@0", "triage:", "bad name"])
def test_parse_reference_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_reference(text)


def test_render_names_prompt_version_and_variable(registry: PromptRegistry) -> None:
    version, _ = registry.create_version("triage", content(variables={"message": "string"}))
    messages = render(version, {"message": "card lost"})
    assert [(m.role, m.content) for m in messages] == [("system", "You sort messages."), ("user", "Classify: card lost")]
    with pytest.raises(ConfigError, match=r"prompt triage@1 needs variable 'message'"):
        render(version, {})
    with pytest.raises(ConfigError, match=r"triage@1 declares variable 'message' as string, but it is int"):
        render(version, {"message": 3})


def test_render_undefined_attribute(registry: PromptRegistry) -> None:
    version, _ = registry.create_version("triage", content("Classify: {{ message.text }}"))
    with pytest.raises(ConfigError, match=r"prompt triage@1, message 2 \(user\).*text"):
        render(version, {"message": {"body": "x"}})


def write_prompt(folder: Path, name: str, user: str) -> None:
    (folder / f"{name}.yaml").write_text(
        f"messages:\n  - role: system\n    content: You sort messages.\n  - role: user\n    content: \"{user}\"\n"
        "metadata:\n  purpose: triage\n"
    )


def test_push_is_idempotent(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    write_prompt(folder, "triage", "Classify: {{ message }}")
    write_prompt(folder, "summary", "Summarise: {{ text }}")
    first = push(registry, folder, author="ana")
    assert sorted((p.version.name, p.version.version, p.created) for p in first) == [
        ("summary", 1, True), ("triage", 1, True)
    ]
    again = push(registry, folder)
    assert all(not p.created for p in again)
    write_prompt(folder, "triage", "Intent of: {{ message }}")
    changed = {p.version.name: (p.version.version, p.created) for p in push(registry, folder)}
    assert changed == {"summary": (1, False), "triage": (2, True)}


def test_push_checks_every_file_first(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    write_prompt(folder, "a", "Classify: {{ message }}")
    (folder / "b.yaml").write_text("messages: []\n")
    with pytest.raises(ConfigError, match="b.yaml is invalid: messages"):
        push(registry, folder)
    assert registry.list() == []


def test_pull_then_push_creates_nothing(registry: PromptRegistry, tmp_path: Path) -> None:
    registry.create_version("team/triage", content("Line one\nClassify: {{ message }}", variables={"message": "string"}))
    registry.set_label("team/triage", 1, "production")
    out = tmp_path / "pulled"
    written = pull(registry, out, label="production")
    assert written == [out / "team" / "triage.yaml"]
    assert "|" in written[0].read_text()
    assert all(not p.created for p in push(registry, out))
    assert pull(registry, tmp_path / "none", label="staging") == []
    assert prompt_yaml(registry.get("team/triage")).startswith("name: team/triage\nversion: 1\n")


def test_push_and_pull_reject_wrong_arguments(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    write_prompt(folder, "triage", "Classify: {{ message }}")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        push(registry, folder / "triage.yaml")
    (folder / "blank.yaml").write_text('name: ""\nmessages:\n  - role: user\n    content: hi\n')
    with pytest.raises(ConfigError, match="has an empty name"):
        push(registry, folder)
    (folder / "blank.yaml").unlink()
    push(registry, folder)
    with pytest.raises(ConfigError, match="no prompt named nothere"):
        pull(registry, tmp_path / "out", names=["nothere"])


def turns(for_each: str = "example in examples") -> PromptContent:
    return PromptContent.model_validate(
        {
            "messages": [
                {"role": "system", "content": "You sort messages."},
                {"role": "user", "content": "{{ example.text }}", "for_each": for_each},
                {"role": "assistant", "content": "{{ example.label }}", "for_each": for_each},
                {"role": "user", "content": "{{ message }}"},
            ]
        }
    )


EXAMPLES = [{"text": "card lost", "label": "lost_card"}, {"text": "fee?", "label": "fees"}]


def test_for_each_repeats_turns_in_pairs(registry: PromptRegistry) -> None:
    version, _ = registry.create_version("triage", turns())
    rendered = render(registry.get(version.reference), {"examples": EXAMPLES, "message": "hello"})
    pairs = [(message.role, message.content) for message in rendered]
    assert pairs == [
        ("system", "You sort messages."),
        ("user", "card lost"),
        ("assistant", "lost_card"),
        ("user", "fee?"),
        ("assistant", "fees"),
        ("user", "hello"),
    ]
    # The loop's item is bound, not a variable; the list it reads is one.
    assert set(version.content.variables) == {"examples", "message"}


def test_for_each_takes_an_expression(registry: PromptRegistry) -> None:
    version, _ = registry.create_version("triage", turns("example in examples | reverse"))
    rendered = render(version, {"examples": EXAMPLES, "message": "hello"})
    assert [message.content for message in rendered[1:5]] == ["fee?", "fees", "card lost", "lost_card"]
    assert render(version, {"examples": [], "message": "hello"})[1].content == "hello"


def test_for_each_errors_say_what_to_write(registry: PromptRegistry) -> None:
    with pytest.raises(ValueError, match="for_each must read 'ITEM in LIST'"):
        turns("examples")
    with pytest.raises(ValueError, match="not a valid expression"):
        turns("example in examples |")
    version, _ = registry.create_version("triage", turns())
    with pytest.raises(ConfigError, match="repeats for each item of 'examples', which must be a list; got str"):
        render(version, {"examples": "not a list", "message": "hello"})


def test_for_each_survives_pull_and_push(registry: PromptRegistry, tmp_path: Path) -> None:
    plain, _ = registry.create_version("plain", content())
    looped, _ = registry.create_version("looped", turns())
    out = tmp_path / "pulled"
    pull(registry, out)
    assert "for_each: example in examples" in (out / "looped.yaml").read_text()
    # A message without a loop is stored and hashed as before loops existed.
    assert "for_each" not in (out / "plain.yaml").read_text()
    before_loops = {
        "messages": [
            {"role": "system", "content": "You sort messages."},
            {"role": "user", "content": "Classify: {{ message }}"},
        ],
        "metadata": {"purpose": "", "output_format": "", "models": [], "note": ""},
        "output_schema": None,
        "variables": {"message": "any"},
    }
    canonical = json.dumps(before_loops, sort_keys=True, separators=(",", ":")).encode()
    assert plain.content_hash == hashlib.sha256(canonical).hexdigest()
    assert all(not pushed.created for pushed in push(registry, out))
    assert registry.get("looped").content == looped.content


def test_pull_into_a_file_names_the_path(registry: PromptRegistry, tmp_path: Path) -> None:
    registry.create_version("triage", content())
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write .*afile/triage.yaml.*pull into a folder you can write to"):
        pull(registry, blocker)
