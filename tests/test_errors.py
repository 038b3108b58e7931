"""ElmobatchError: the base of every error elmobatch raises on purpose, whose message is shown as it is."""

import importlib
import inspect
import pickle
import pkgutil

import elmobatch
from elmobatch import ElmobatchError
from elmobatch.locking import LockHeld
from elmobatch.scheduling.run import _error_text
from elmobatch.training.head import HeadError

INTERNAL = {"CorruptSegment", "_OpenRecord"}  # signals caught inside their own modules, never shown


def own_exception_classes() -> set[type]:
    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(elmobatch.__path__, "elmobatch.")
               if m.name != "elmobatch.__main__"]  # which would run the command line
    return {cls for module in modules for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Exception) and cls.__module__ == module.__name__}


def test_every_error_raised_on_purpose_is_an_elmobatch_error_and_a_kind_of_a_built_in_one():
    """An error class of elmobatch's own without the base would print as "HeadError: ..." in run's
    report; without a built-in base, callers catching ValueError or OSError would miss it."""
    own = own_exception_classes()
    assert len(own) >= 20, sorted(c.__name__ for c in own)
    assert sorted(c.__qualname__ for c in own if not issubclass(c, ElmobatchError)) == sorted(INTERNAL)
    assert [c.__qualname__ for c in own - {ElmobatchError}
            if c.__qualname__ not in INTERNAL and not issubclass(c, ValueError | OSError | RuntimeError)] == []


def test_run_shows_an_elmobatch_errors_message_as_it_is_and_any_other_with_its_type():
    assert _error_text(HeadError("head h: expected 3 layers")) == "head h: expected 3 layers"
    assert _error_text(OSError(28, "No space left on device")) == "OSError: [Errno 28] No space left on device"
    assert _error_text(KeyError("x")) == "KeyError: 'x'"


def test_a_held_lock_error_survives_pickling_with_its_holder():
    """As an error raised in a worker process comes back to its parent."""
    copy = pickle.loads(pickle.dumps(LockHeld("out: locked", {"pid": 7})))
    assert type(copy) is LockHeld and str(copy) == "out: locked" and copy.holder == {"pid": 7}
