"""The prompt registry in the store: immutable versions, movable labels, and the history of moves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from trunkline.errors import ConfigError
from trunkline.prompts.versions import (
    PromptContent,
    PromptReference,
    PromptVersion,
    check_label,
    check_name,
    parse_reference,
)
from trunkline.store.audit import record_action
from trunkline.store.database import Store, as_utc
from trunkline.store.tables import prompt_label_moves, prompt_labels, prompt_versions


class PromptNotFound(ConfigError):
    """The registry has no prompt, version or label of the name asked for."""


@dataclass(frozen=True)
class LabelMove:
    """One move of a label: the versions before and after, who moved it, and when."""

    name: str
    label: str
    from_version: int | None
    to_version: int
    moved_by: str | None
    moved_at: datetime


@dataclass(frozen=True)
class PromptSummary:
    """A prompt's latest version, its count of versions, and where its labels point."""

    name: str
    latest_version: int
    versions: int
    labels: dict[str, int]
    updated_at: datetime


class PromptRegistry:
    """Reads and writes prompt versions and labels in a `Store`.

    Versions are never changed or deleted: `create_version` with new content
    adds the next number, and with content that an existing version already
    has, returns that version.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def create_version(
        self,
        name: str,
        content: PromptContent,
        *,
        author: str | None = None,
        parent_version: int | None = None,
    ) -> tuple[PromptVersion, bool]:
        """Add `content` as the next version of `name`; return the version and whether it is new."""
        check_name(name)
        digest = content.content_hash()
        for _ in range(3):
            with self.store.engine.begin() as connection:
                existing = connection.execute(
                    select(prompt_versions).where(
                        prompt_versions.c.name == name, prompt_versions.c.content_hash == digest
                    ).order_by(prompt_versions.c.version).limit(1)
                ).mappings().first()
                if existing is not None:
                    return self._version(connection, existing), False
                latest = connection.execute(
                    select(func.max(prompt_versions.c.version)).where(prompt_versions.c.name == name)
                ).scalar()
                if parent_version is not None and (latest is None or parent_version > latest):
                    raise ConfigError(
                        f"parent version {parent_version} of prompt {name!r} does not exist; "
                        f"the latest is {latest or 'none'}"
                    )
                values = {
                    "name": name,
                    "version": (latest or 0) + 1,
                    "content_hash": digest,
                    "messages": [message.model_dump() for message in content.messages],
                    "variables": content.variables,
                    "output_schema": content.output_schema,
                    "metadata": content.metadata.model_dump(),
                    "parent_version": parent_version,
                    "author": author,
                    "created_at": datetime.now(UTC),
                }
                try:
                    connection.execute(prompt_versions.insert().values(**values))
                except IntegrityError:
                    # Another writer took this number first; read again and retry.
                    continue
                record_action(
                    connection, author or "unknown", "prompt.version_created", f"{name}@{values['version']}",
                    {"name": name, "version": values["version"], "parent_version": parent_version},
                )
                return self._version(connection, values), True
        raise ConfigError(f"could not add a version of prompt {name!r}: other writers kept taking its number")

    def get(self, reference: PromptReference | str) -> PromptVersion:
        """Return the version a reference names: ``name``, ``name@3`` or ``name:label``.

        Raises:
            PromptNotFound: the prompt, version or label does not exist.
            ConfigError: the reference is not valid.
        """
        if isinstance(reference, str):
            reference = parse_reference(reference)
        with self.store.engine.connect() as connection:
            version = reference.version
            if reference.label is not None:
                version = connection.execute(
                    select(prompt_labels.c.version).where(
                        prompt_labels.c.name == reference.name, prompt_labels.c.label == reference.label
                    )
                ).scalar()
                if version is None:
                    labels = self._labels(connection, reference.name)
                    raise PromptNotFound(
                        f"prompt {reference.name!r} has no label {reference.label!r}; its labels: "
                        f"{', '.join(sorted(labels)) or 'none'}. Set one with "
                        f"`trunkline prompts label {reference.name}@VERSION {reference.label}`"
                    )
            query = select(prompt_versions).where(prompt_versions.c.name == reference.name)
            if version is None:
                query = query.order_by(prompt_versions.c.version.desc()).limit(1)
            else:
                query = query.where(prompt_versions.c.version == version)
            row = connection.execute(query).mappings().first()
            if row is None:
                raise self._missing(connection, reference)
            return self._version(connection, row)

    def versions(self, name: str) -> list[PromptVersion]:
        """Return every version of `name`, oldest first."""
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                select(prompt_versions)
                .where(prompt_versions.c.name == name)
                .order_by(prompt_versions.c.version)
            ).mappings().all()
            if not rows:
                raise self._missing(connection, PromptReference(name))
            labels = self._labels(connection, name)
            return [self._version(connection, row, labels) for row in rows]

    def list(self) -> list[PromptSummary]:
        """Return one summary per prompt, by name."""
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                select(
                    prompt_versions.c.name,
                    func.max(prompt_versions.c.version).label("latest"),
                    func.count().label("count"),
                    func.max(prompt_versions.c.created_at).label("updated"),
                )
                .group_by(prompt_versions.c.name)
                .order_by(prompt_versions.c.name)
            ).all()
            label_rows = connection.execute(select(prompt_labels)).mappings().all()
        labels: dict[str, dict[str, int]] = {}
        for row in label_rows:
            labels.setdefault(row["name"], {})[row["label"]] = row["version"]
        return [
            PromptSummary(
                name=row.name,
                latest_version=row.latest,
                versions=row.count,
                labels=labels.get(row.name, {}),
                updated_at=as_utc(row.updated),
            )
            for row in rows
        ]

    def set_label(self, name: str, version: int, label: str, *, moved_by: str | None = None) -> LabelMove:
        """Point `label` of `name` at `version`, and record the move.

        Raises:
            PromptNotFound: the prompt or the version does not exist.
            ConfigError: the label name is invalid.
        """
        check_label(label)
        now = datetime.now(UTC)
        with self.store.engine.begin() as connection:
            exists = connection.execute(
                select(prompt_versions.c.version).where(
                    prompt_versions.c.name == name, prompt_versions.c.version == version
                )
            ).scalar()
            if exists is None:
                raise self._missing(connection, PromptReference(name, version=version))
            previous = connection.execute(
                select(prompt_labels.c.version).where(
                    prompt_labels.c.name == name, prompt_labels.c.label == label
                )
            ).scalar()
            values = {"version": version, "moved_by": moved_by, "moved_at": now}
            if previous is None:
                connection.execute(prompt_labels.insert().values(name=name, label=label, **values))
            else:
                connection.execute(
                    prompt_labels.update()
                    .where(prompt_labels.c.name == name, prompt_labels.c.label == label)
                    .values(**values)
                )
            connection.execute(
                prompt_label_moves.insert().values(
                    name=name, label=label, from_version=previous, to_version=version,
                    moved_by=moved_by, moved_at=now,
                )
            )
            record_action(
                connection, moved_by or "unknown", "label.moved", f"{name}:{label}",
                {"name": name, "label": label, "from": previous, "to": version},
            )
        return LabelMove(name, label, previous, version, moved_by, now)

    def label_history(self, name: str, label: str | None = None) -> list[LabelMove]:
        """Return the moves of `name`'s labels (or of one label), oldest first."""
        query = select(prompt_label_moves).where(prompt_label_moves.c.name == name)
        if label is not None:
            query = query.where(prompt_label_moves.c.label == label)
        with self.store.engine.connect() as connection:
            rows = connection.execute(query.order_by(prompt_label_moves.c.move_id)).mappings().all()
        return [
            LabelMove(
                row["name"], row["label"], row["from_version"], row["to_version"],
                row["moved_by"], as_utc(row["moved_at"]),
            )
            for row in rows
        ]

    def _labels(self, connection: Connection, name: str) -> dict[str, int]:
        rows = connection.execute(
            select(prompt_labels.c.label, prompt_labels.c.version).where(prompt_labels.c.name == name)
        ).all()
        return {row.label: row.version for row in rows}

    def _version(
        self, connection: Connection, row: RowMapping | dict[str, Any], labels: dict[str, int] | None = None
    ) -> PromptVersion:
        labels = self._labels(connection, row["name"]) if labels is None else labels
        return PromptVersion(
            name=row["name"],
            version=row["version"],
            content=PromptContent(
                messages=row["messages"],
                variables=row["variables"],
                output_schema=row["output_schema"],
                metadata=row["metadata"],
            ),
            content_hash=row["content_hash"],
            author=row["author"],
            created_at=as_utc(row["created_at"]),
            parent_version=row["parent_version"],
            labels=tuple(sorted(label for label, version in labels.items() if version == row["version"])),
        )

    def _missing(self, connection: Connection, reference: PromptReference) -> PromptNotFound:
        latest = connection.execute(
            select(func.max(prompt_versions.c.version)).where(prompt_versions.c.name == reference.name)
        ).scalar()
        if latest is None:
            return PromptNotFound(
                f"prompt {reference.name!r} is not in the registry; list prompts with "
                "`trunkline prompts list`, or add it with `trunkline prompts push DIR`"
            )
        return PromptNotFound(
            f"prompt {reference.name!r} has no version {reference.version}; its versions are "
            f"1 to {latest}"
        )
