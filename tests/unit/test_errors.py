"""One error convention: every error of the project derives from `MaildispatchError` (with a
`code`) and from the built-in that says what it is; refused input is an `InvalidInput` with
keyword-only `field`, `code`, `reason`, `index`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import dispatcher
import queues
from queues.errors import InvalidInput, MaildispatchError, QueueError

# Bases of families, never the only class of a raised error's kind.
BASES = (MaildispatchError, QueueError)
BUILTINS = (ValueError, LookupError, RuntimeError, ConnectionError, TimeoutError, OSError)


def _modules() -> list[str]:
    names = []
    for pkg in (dispatcher, queues):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if info.name.endswith("__main__"):
                continue
            names.append(info.name)
    return names


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Exception) and obj.__module__ == name:
                found[f"{name}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


ERRORS = _error_classes()


def test_the_errors_are_found() -> None:
    names = {e.__name__ for e in ERRORS}
    assert {"ConfigError", "MessageError", "DkimSignError", "QueueUnavailable"} <= names


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__qualname__)
def test_every_error_has_the_base_a_builtin_and_a_code(cls: type[BaseException]) -> None:
    assert issubclass(cls, MaildispatchError)
    # An HTTP problem is an answer to send, not a kind of failure Python has a name for.
    assert cls in BASES or issubclass(cls, BUILTINS) or cls.__name__ == "ApiProblem"
    assert isinstance(cls.code, str) and cls.code


def test_invalid_input_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        InvalidInput("to", "bad")  # type: ignore[misc]
    e = InvalidInput(field="messages[1].rcpt", reason="not an address", code="invalid", index=1)
    assert isinstance(e, ValueError)
    assert (e.field, e.reason, e.code, e.index) == (
        "messages[1].rcpt",
        "not an address",
        "invalid",
        1,
    )
    assert str(e) == "messages[1].rcpt: not an address"
    assert InvalidInput(field="x", reason="y").code == "invalid"


def test_one_definition_of_the_queue_errors() -> None:
    import queues.errors as errors

    for name in ("QueueUnavailable", "SchemaMismatch", "QueueTimeout", "QueueClosed"):
        holders = [
            m for m in _modules() if getattr(importlib.import_module(m), name, None) is not None
        ]
        defined = {getattr(importlib.import_module(m), name).__module__ for m in holders}
        assert defined == {errors.__name__}, name
