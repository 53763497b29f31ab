"""Records stand in for frozen dataclasses: same construction, equality, hashing and immutability."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest

from juncture._util.record import FrozenError, asdict, field, fields, record, replace


@record
class Point:
    kind: ClassVar[str] = "point"
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)


@record
class Pair:
    x: int
    y: str


@record
class Other:
    x: int
    y: str


@record(frozen=False)
class Counter:
    name: str
    count: int = 0


def test_fields_are_the_own_annotations_in_order_without_classvars() -> None:
    assert fields(Point) == ("x", "y", "tags")
    assert Point.kind == "point"


def test_defaults_apply_and_a_factory_makes_a_fresh_value_each_time() -> None:
    first, second = Point(1), Point(x=2, y=3)
    assert (first.x, first.y, second.y) == (1, 0, 3)
    first.tags.append("a")
    assert second.tags == [] and Point(4).tags == []


def test_a_missing_field_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]


def test_equal_fields_make_equal_records_with_equal_hashes() -> None:
    assert Pair(1, "a") == Pair(1, "a") and hash(Pair(1, "a")) == hash(Pair(1, "a"))
    assert Pair(1, "a") != Pair(1, "b")
    assert {Pair(1, "a"): "found"}[Pair(1, "a")] == "found"


def test_records_of_different_classes_are_never_equal() -> None:
    assert Pair(1, "a") != Other(1, "a")  # type: ignore[comparison-overlap]
    assert Pair(1, "a") != (1, "a")  # type: ignore[comparison-overlap]


def test_frozen_records_refuse_assignment_and_deletion() -> None:
    point = Point(1)
    with pytest.raises(FrozenError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del point.y
    assert point.x == 1


def test_mutable_records_accept_assignment_and_are_not_hashable() -> None:
    counter = Counter("runs")
    counter.count += 1
    assert counter == Counter("runs", 1)
    with pytest.raises(TypeError):
        hash(counter)


def test_replace_copies_with_changes_and_asdict_lists_the_fields() -> None:
    point = Point(1, 2, ["a"])
    moved = replace(point, y=5)
    assert moved == Point(1, 5, ["a"]) and point.y == 2
    assert asdict(moved) == {"x": 1, "y": 5, "tags": ["a"]}


def test_repr_shows_the_class_and_its_fields() -> None:
    assert repr(Counter("runs", 2)) == "Counter(name='runs', count=2)"


def test_a_cli_run_imports_neither_dataclasses_nor_inspect() -> None:
    # What records are for: `dataclasses` and `inspect` cost a run about 45 ms to import and use.
    code = "import sys, juncture.cli.deploy, juncture.cli.fire; print(sorted({'dataclasses', 'inspect'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
