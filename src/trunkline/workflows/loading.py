"""Finding the Python objects a workflow file names as ``module:attribute``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from trunkline.errors import WorkflowError


def load_object(reference: str, folder: Path) -> Any:
    """Return the object named ``module:attribute``.

    The module is first looked for as ``module.py`` beside the workflow
    file, then imported as an installed module.
    """
    module_name, separator, attribute = reference.partition(":")
    if not separator or not module_name or not attribute:
        raise WorkflowError(f"expected module:attribute, got {reference!r}")
    module = _load_module(module_name, folder)
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as error:
            raise WorkflowError(
                f"{module_name} has no attribute {attribute!r} (from {reference!r})"
            ) from error
    return target


def _load_module(name: str, folder: Path) -> ModuleType:
    file = folder / (name.replace(".", "/") + ".py")
    if file.is_file():
        return _module_from_file(file)
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise WorkflowError(
            f"cannot import module {name!r}: not a file {file} and not installed ({error})"
        ) from error


# A module is in sys.modules before its code has run; without the lock a
# second thread loading the same file would get it half initialised.
_loading = threading.RLock()


def _module_from_file(file: Path) -> ModuleType:
    with _loading:
        return _load_file(file)


def _load_file(file: Path) -> ModuleType:
    resolved = file.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    unique = f"trunkline_workflow_{digest}_{resolved.stem}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, resolved)
    if spec is None or spec.loader is None:
        raise WorkflowError(f"cannot load {resolved} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[unique]
        raise
    return module
