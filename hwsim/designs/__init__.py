"""The accelerator designs, one record each: `DESIGNS` maps a name to its `Design` (hwsim/designs/base.py).

Every module of this package other than base.py defines one design as `DESIGN = Design(...)`; they are
found by file name, so adding a design is one file here plus its generator in rtl/gen (and its tests).
Everything that differs between designs (timing rules, arithmetic form, event counts, area components,
RTL generator, program command and weight layout, default arrays, plot colour, published claims) is read
from the record; nothing else names a design.

    get(name) -> Design          the record, or ValueError naming the known designs
    names() -> tuple[str, ...]   in display order
    derive(base, name, **data)   a registered variant of a design with other defaults (tests, sweeps)
    registered(design)           context manager: the design is in DESIGNS inside the block only
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Iterator

from hwsim.designs.base import DERIVABLE, Claim, Design

__all__ = ["DESIGNS", "DERIVABLE", "Claim", "Design", "get", "names", "derive", "register", "unregister", "registered", "load_derived"]


def _discover() -> dict[str, Design]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        found.append(mod.DESIGN)
    return {d.name: d for d in sorted(found, key=lambda d: (d.order, d.name))}


DESIGNS: dict[str, Design] = _discover()


def names() -> tuple[str, ...]:
    return tuple(DESIGNS)


def get(name: str) -> Design:
    d = DESIGNS.get(name)
    if d is None:
        raise ValueError(f"unknown design {name!r}; choose one of {', '.join(DESIGNS)}")
    return d


def _resort():
    items = sorted(DESIGNS.values(), key=lambda d: (d.order, d.name))
    DESIGNS.clear()
    DESIGNS.update({d.name: d for d in items})


def register(design: Design) -> Design:
    if design.name in DESIGNS and DESIGNS[design.name] != design:
        raise ValueError(f"design {design.name!r} is already registered")
    DESIGNS[design.name] = design
    _resort()
    return design


def unregister(name: str) -> None:
    DESIGNS.pop(name, None)


def derive(base: str, name: str, **changes) -> Design:
    """Register and return a variant of `base` under `name` with other data fields (DERIVABLE)."""
    return register(get(base).derive(name, **changes))


@contextlib.contextmanager
def registered(design: Design) -> Iterator[Design]:
    register(design)
    try:
        yield design
    finally:
        unregister(design.name)


def load_derived(defs: list[dict]) -> None:
    """Register derived designs described by Design.derivation() (in a process that did not make them)."""
    for d in defs:
        if d["name"] not in DESIGNS:
            derive(d["base"], d["name"], **{k: d[k] for k in DERIVABLE if k in d})
