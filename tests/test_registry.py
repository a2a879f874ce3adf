"""The one registry (advimage/registry.py) and every name registered in it.

The generic class is tested on its own; then ONE parametrized test runs over every registered
name of every kind, collected from the registries themselves (a newly registered name is tested
without touching this file): it resolves through its kind's public lookup, has a description,
and the CLI lists it. Per kind, an unknown name raises the kind's error naming the valid ones.
Names are collected when this module is imported, so test models that other test modules
register at import (``tiny_bench_net``, ``tiny-jpeg-test``) are checked too in a full run.
"""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

import pytest

import advimage.experiments  # noqa: F401  (registers every experiment)
from advimage import attacks, defenses, detect, models, pipelines, quantize, specs
from advimage.attacks import UnknownAttackError
from advimage.defenses import UnknownDefenseError
from advimage.detect import UnknownDetectorError
from advimage.experiments import EXPERIMENTS, UnknownExperimentError
from advimage.models import UnknownModelError
from advimage.quantize import UnknownQuantizerError
from advimage.quantize.base import QUANTIZERS
from advimage.quantize.grammar import ALIASES, RULES
from advimage.registry import DuplicateNameError, Registry, UnknownNameError


# -- the generic class ---------------------------------------------------------------------------
class UnknownThingError(UnknownNameError):
    pass


@dataclass(frozen=True)
class Thing:
    """A thing.

    Not part of the description."""

    size: int


def test_register_get_contains_and_order():
    reg: Registry[Thing] = Registry("thing", UnknownThingError)
    b, a = Thing(2), Thing(1)
    assert reg.register("b", b) is b
    reg.register("a", a, "the first thing")
    assert reg.get("a") is a and reg["b"] is b
    assert "a" in reg and "c" not in reg and ["x"] not in reg  # an unhashable name is simply absent
    assert len(reg) == 2
    assert list(reg) == ["b", "a"] and reg.items() == [("b", b), ("a", a)]  # registration order
    assert reg.names() == ["a", "b"]  # sorted


def test_decorator_registers_and_returns_the_object():
    reg: Registry[Callable[[], int]] = Registry("builder")

    @reg.decorator("seven")
    def seven() -> int:
        """Builds seven."""
        return 7

    assert reg.get("seven") is seven and seven() == 7
    assert reg.description("seven") == "Builds seven."


def test_descriptions_one_line():
    reg: Registry[Thing] = Registry("thing")
    reg.register("doc", Thing(1))
    reg.register("given", Thing(2), "  two\n   lines ")
    assert reg.description("doc") == "A thing."  # first paragraph of the docstring
    assert reg.description("given") == "two lines"
    with pytest.raises(UnknownNameError, match="unknown thing 'nope'"):
        reg.description("nope")


def test_duplicates_refused_unless_the_same_entry():
    reg: Registry[Any] = Registry("thing")
    reg.register("a", Thing(1))
    reg.register("a", Thing(1))  # equal (a module imported again): a no-op
    with pytest.raises(DuplicateNameError, match="thing 'a' is already registered"):
        reg.register("a", Thing(2))
    with pytest.raises(DuplicateNameError):
        reg.register("a", 1)  # equal value of another type is another entry
    assert reg.get("a") == Thing(1)
    reg.unregister("a")
    reg.register("a", Thing(2))
    assert reg.get("a") == Thing(2)
    reg.unregister("never there")  # ignored


def test_names_are_non_empty_strings():
    reg: Registry[int] = Registry("thing")
    for bad in ("", None, 3):
        with pytest.raises(ValueError, match="non-empty string"):
            reg.register(bad, 1)  # type: ignore[arg-type]


def test_unknown_name_error_names_the_kind_and_lists_valid_names_sorted():
    reg: Registry[int] = Registry("thing", UnknownThingError)
    reg.register("zeta", 1)
    reg.register("alpha", 2)
    with pytest.raises(UnknownThingError) as exc:
        reg.get("nope")
    assert isinstance(exc.value, KeyError)
    assert str(exc.value) == "unknown thing 'nope'; valid things: alpha, zeta"  # no KeyError quotes
    with pytest.raises(UnknownThingError):
        reg.get(["unhashable"])  # type: ignore[arg-type]
    labelled: Registry[int] = Registry("model", label="registered models")
    labelled.register("m", 1)
    err = labelled.unknown("x", context=" in spec 'x+y'", hint="; or timm:<name>")
    assert type(err) is UnknownNameError
    assert str(err) == "unknown model 'x' in spec 'x+y'; registered models: m; or timm:<name>"


# -- every registered name of every kind ---------------------------------------------------------
@cache
def cli_output(*argv: str) -> str:
    """stdout of ``advimage ARGV`` run in this process (``--help`` exits 0)."""
    from advimage.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        try:
            rc = main(list(argv))
        except SystemExit as exc:
            rc = exc.code
    assert rc in (0, None), f"advimage {' '.join(argv)} exited {rc}"
    return buf.getvalue()


def listed(name: str, text: str) -> bool:
    """``name`` appears in ``text`` as a whole token (not inside a longer name)."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def _model(name: str) -> None:
    specs.check(name)  # what every command runs before building; no weights are loaded
    assert callable(models.MODELS.get(name))


def _attack(name: str) -> None:
    s = attacks.spec(name)
    assert s.name == name and attacks.get(name) is s.run and s.budget in ("gradients", "queries", "forwards")


def _quantizer(name: str) -> None:
    s = quantize.spec(name)
    assert s.name == name and s.suffix in (".png", ".jpg", ".npy")


def _resize(name: str) -> None:
    assert pipelines.parse(name).spec == name and pipelines.resolve(name) == (name,)


def _set(name: str) -> None:
    members = pipelines.resolve(name)
    assert members and members == pipelines.SETS.get(name)
    assert all(pipelines.parse(m).spec == m for m in members)


def _defense(name: str) -> None:
    assert callable(defenses.get(name))
    specs.check(f"efficientnet_lite0+{name}")


def _detector(name: str) -> None:
    cls = detect.get(name)
    assert cls.type == name and callable(cls.load)


def _experiment(name: str) -> None:
    import argparse

    sub = argparse.ArgumentParser(prog="advimage experiment").add_subparsers()
    parser = EXPERIMENTS.get(name).add_parser(sub)
    assert parser.prog == f"advimage experiment {name}" and list(sub.choices) == [name]
    assert callable(parser.get_default("experiment_main"))


@dataclass(frozen=True)
class Kind:
    """One registry as the user meets it: its names, public lookup, description, CLI listing."""

    registry: Registry
    lookup: Callable[[str], None]          # resolves ``name`` through the kind's public functions
    listing: tuple[str, ...]               # argv of the CLI listing that shows the names
    error: type[UnknownNameError]          # the kind's error (what existing ``except`` clauses catch)
    unknown: Callable[[str], Any]          # the public lookup an unknown name goes through
    names: Callable[[], list[str]] | None = None   # the public names (default: the registry's)
    describe: Callable[[str], str] | None = None   # the public description (default: the registry's)

    def public_names(self) -> list[str]:
        return self.names() if self.names else self.registry.names()

    def description(self, name: str) -> str:
        return self.describe(name) if self.describe else self.registry.description(name)


KINDS: dict[str, Kind] = {
    "model": Kind(models.MODELS, _model, ("models",), UnknownModelError, models.get),
    "attack": Kind(attacks.ATTACKS, _attack, ("attacks",), UnknownAttackError, attacks.spec),
    # the registered rules and the grammar's aliases (both listed, both resolved by spec())
    "quantizer": Kind(QUANTIZERS, _quantizer, ("quantizers",), UnknownQuantizerError, quantize.spec,
                      names=quantize.names, describe=lambda n: quantize.spec(n).description),
    "resize": Kind(pipelines.RESIZES, _resize, ("pipelines",), pipelines.UnknownPipelineError, pipelines.parse,
                   describe=pipelines.describe),
    "pipeline-set": Kind(pipelines.SETS, _set, ("pipelines",), pipelines.UnknownPipelineError, pipelines.SETS.get),
    "defense": Kind(defenses.DEFENSES, _defense, ("defenses",), UnknownDefenseError, defenses.get),
    "detector": Kind(detect.DETECTORS, _detector, ("detect", "train", "--help"), UnknownDetectorError, detect.get),
    "experiment": Kind(EXPERIMENTS, _experiment, ("experiment", "--help"), UnknownExperimentError,
                       EXPERIMENTS.get),
}

REGISTERED = [pytest.param(kind, name, id=f"{kind}:{name}")
              for kind, k in KINDS.items() for name in k.public_names()]


def test_every_kind_has_names():
    assert {p.values[0] for p in REGISTERED} == set(KINDS)


@pytest.mark.parametrize("kind,name", REGISTERED)
def test_every_registered_name_resolves_is_described_and_listed(kind, name):
    k = KINDS[kind]
    if name not in k.public_names():  # registered while tests were collected, since unregistered by a test
        pytest.skip(f"{kind} {name!r} is no longer registered")
    k.lookup(name)
    assert k.description(name).strip(), f"{kind} {name!r} has no description"
    assert listed(name, cli_output(*k.listing)), f"{kind} {name!r} is not in `advimage {' '.join(k.listing)}`"


@pytest.mark.parametrize("kind", list(KINDS))
def test_unknown_name_gives_the_kinds_error_with_the_valid_names(kind):
    k = KINDS[kind]
    with pytest.raises(k.error) as exc:
        k.unknown("no-such-name")
    err = exc.value
    assert isinstance(err, UnknownNameError) and isinstance(err, KeyError)
    text = str(err)
    assert text.startswith("unknown ") and "'no-such-name'" in text
    assert all(listed(n, text) for n in k.public_names()), text
    assert k.registry.error is k.error


def test_errors_keep_their_old_bases():
    assert issubclass(pipelines.UnknownPipelineError, pipelines.PipelineError)  # a ValueError, as before
    assert issubclass(UnknownDetectorError, ValueError)  # detect.get raised ValueError before
    assert issubclass(quantize.grammar.QuantizerSpecError, UnknownQuantizerError)


def test_resolvers_above_the_registries_keep_their_specialities():
    assert "timm:resnet50" not in models.MODELS
    specs.check("timm:resnet50+jpeg:75")  # not registered, still a model spec
    with pytest.raises(UnknownModelError, match="timm:<name>"):
        models.get("nope")
    assert set(RULES) <= set(QUANTIZERS) and not set(ALIASES) & set(QUANTIZERS)
    assert quantize.spec("smart+margin:0.5").margin == 0.5  # a spec string: parsed, not registered
    assert pipelines.parse("torch-bicubic+round+jpeg:80").jpeg == 80
    with pytest.raises(pipelines.UnknownPipelineError, match="or a set: common"):
        pipelines.resolve("commn")


def test_a_new_registration_reaches_lookup_listing_and_errors():
    @defenses.register("test-identity", "test: no defense at all")
    def identity(model):
        return model

    try:
        assert defenses.get("test-identity") is identity and "test-identity" in defenses.names()
        from advimage.cli import main

        buf = io.StringIO()
        with redirect_stdout(buf):
            assert main(["defenses"]) == 0
        assert "test-identity  test: no defense at all" in buf.getvalue()
        with pytest.raises(UnknownDefenseError, match="test-identity"):
            defenses.get("nope")
        with pytest.raises(DuplicateNameError):
            defenses.register("test-identity")(lambda model: model)
    finally:
        defenses.DEFENSES.unregister("test-identity")
    assert "test-identity" not in defenses.names()
