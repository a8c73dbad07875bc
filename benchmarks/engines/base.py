"""What every engine module provides, and how the harness talks to it.

An engine module has a ``load()`` returning one or more ``Engine`` objects, or raising
``EngineUnavailable(reason)`` (the library is not installed, a compiler is missing...).
An engine's ``build(case, data)`` returns a ``Step``, or raises ``Unsupported(reason)``:

* ``step.run()`` does one step of the case (the thing that is timed); for a lazy
  library it must also force the result to be computed;
* ``step.check()`` does one step too, and returns the numbers that are compared across
  engines, as numpy arrays named as below. The harness calls it once, before timing.

Names of the checked outputs:

* ``out``: the forward result (W1, W2) or the final value (W6);
* ``loss``: the loss of a training step (W3, W4, W5), before the update;
* ``grad.<name>``: the gradient of an input or parameter, before the update;
* ``param.<name>``: a parameter after the SGD update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


class EngineUnavailable(Exception):
    """The engine cannot run here at all; the message says why (shown in the report)."""


class Unsupported(Exception):
    """The engine cannot run this workload; the message says why (shown in its cell)."""


@dataclass
class Step:
    run: Callable[[], object]
    check: Callable[[], dict]


class Engine:
    key = "engine"          # what --engines matches
    name = "engine"         # the column header
    version = ""

    def activate(self) -> None:
        """Called before each check and each timed measurement (backend switches)."""

    def deactivate(self) -> None:
        """Called when a case is done: undo what ``activate`` changed globally."""

    def build(self, case, data) -> Step:
        raise Unsupported(f"{self.name} does not implement {case.workload}")

    def __repr__(self) -> str:
        return f"<engine {self.name} {self.version}>"
