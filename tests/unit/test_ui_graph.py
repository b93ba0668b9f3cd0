"""The dependency graph's layout (socmeth.ui.graph) and the partial that draws it."""

from __future__ import annotations

import random
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest

from socmeth.dependencies import MAX_DEPENDENCIES
from socmeth.models import Run, RunState, Trigger
from socmeth.store.base import DependencyGraph, GraphJob
from socmeth.ui import graph as layout_module
from socmeth.ui.graph import (
    BOX_HEIGHT,
    BOX_WIDTH,
    MARGIN,
    NAME_PX,
    ROW_GAP,
    TEXT_PADDING,
    GraphLayout,
    JobBox,
    lay_out,
    shorten,
)
from socmeth.ui.templating import build_templates

CREATED_AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CSS = Path(layout_module.__file__).parent / "static" / "ui.css"
NUMBER = r"-?\d+(?:\.\d+)?"


def job(
    job_id: int,
    name: str | None = None,
    *,
    state: RunState | None = RunState.SUCCEEDED,
    enabled: bool = True,
    schedule: str | None = None,
) -> GraphJob:
    run = (
        Run(
            id=1000 + job_id,
            job_id=job_id,
            job_name=name or f"job-{job_id}",
            trigger=Trigger.SCHEDULE,
            scheduled_at=None,
            created_at=CREATED_AT,
            state=state,
        )
        if state is not None
        else None
    )
    return GraphJob(job_id, name or f"job-{job_id}", enabled, schedule, run)


def graph_of(
    edges: Iterable[tuple[int, int]],
    *,
    job_id: int = 1,
    jobs: Iterable[int] = (),
    truncated: bool = False,
) -> DependencyGraph:
    """Build a graph of `job-N` jobs: the page's job first, the rest as found."""
    edge_list = list(edges)
    ids = [job_id]
    for i in [*jobs, *(n for edge in edge_list for n in edge)]:
        if i not in ids:
            ids.append(i)
    return DependencyGraph(job_id, [job(i) for i in ids], edge_list, truncated)


def random_dag(
    count: int, seed: int, most: int = 3, reach: int = 40
) -> DependencyGraph:
    """Return a graph where each job depends on up to `most` of the `reach` before."""
    rng = random.Random(seed)
    edges = {
        (rng.randint(max(1, b - reach), b - 1), b)
        for b in range(2, count + 1)
        for _ in range(rng.randint(0, most))
    }
    return graph_of(sorted(edges), jobs=range(1, count + 1))


def by_id(layout: GraphLayout) -> dict[int, JobBox]:
    return {box.id: box for box in layout.jobs}


def centre(box: JobBox) -> float:
    return box.y + box.height / 2


def points(d: str) -> list[tuple[float, float]]:
    numbers = [float(n) for n in re.findall(NUMBER, d)]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def within(y: float, box: JobBox) -> bool:
    return box.y <= y <= box.y + box.height


def assert_sound(layout: GraphLayout, graph: DependencyGraph) -> None:
    """Check what every layout owes: each job placed once, no two boxes overlapping,
    inside the canvas, every edge from its upstream box's right side to its
    downstream box's left side, one layer or more to the right."""
    boxes = by_id(layout)
    assert sorted(boxes) == sorted({j.id for j in graph.jobs})
    for box in layout.jobs:
        assert box.x >= 0
        assert box.y >= 0
        assert box.x + box.width <= layout.width
        assert box.y + box.height <= layout.height
    columns: dict[float, list[JobBox]] = {}
    for box in layout.jobs:
        columns.setdefault(box.x, []).append(box)
    for column in columns.values():
        column.sort(key=lambda b: b.y)
        for upper, lower in pairwise(column):
            assert upper.y + upper.height + ROW_GAP <= lower.y + 0.2, (upper, lower)
    for edge in layout.edges:
        upstream, downstream = boxes[edge.upstream_id], boxes[edge.downstream_id]
        (x1, y1), *_, (x2, y2) = points(edge.d)
        assert upstream.layer < downstream.layer
        assert x1 == upstream.x + upstream.width
        assert x2 == downstream.x
        assert x1 < x2
        assert within(y1, upstream)
        assert within(y2, downstream)


def crossings(layout: GraphLayout) -> int:
    """Count crossing pairs among edges between adjacent layers (by end heights)."""
    boxes = by_id(layout)
    segments = [
        (boxes[e.upstream_id], boxes[e.downstream_id])
        for e in layout.edges
        if boxes[e.downstream_id].layer == boxes[e.upstream_id].layer + 1
    ]
    return sum(
        1
        for i, (a, b) in enumerate(segments)
        for c, d in segments[i + 1 :]
        if a.layer == c.layer and (a.y - c.y) * (b.y - d.y) < 0
    )


# The layout


def test_a_chain_takes_one_layer_per_job_in_a_straight_line() -> None:
    graph = graph_of([(1, 2), (2, 3), (3, 4), (4, 5)])

    layout = lay_out(graph)

    assert_sound(layout, graph)
    boxes = by_id(layout)
    assert [boxes[i].layer for i in range(1, 6)] == [0, 1, 2, 3, 4]
    assert {boxes[i].y for i in range(1, 6)} == {MARGIN}
    assert layout.layers == 5
    assert layout.width == 2 * MARGIN + 5 * BOX_WIDTH + 4 * (layout_module.COLUMN_GAP)
    assert layout.height == 2 * MARGIN + BOX_HEIGHT


def test_a_diamond_splits_the_middle_and_centres_its_ends() -> None:
    graph = graph_of([(1, 2), (1, 3), (2, 4), (3, 4)])

    layout = lay_out(graph)

    assert_sound(layout, graph)
    boxes = by_id(layout)
    assert [boxes[i].layer for i in range(1, 5)] == [0, 1, 1, 2]
    middle = (centre(boxes[2]) + centre(boxes[3])) / 2
    assert centre(boxes[1]) == pytest.approx(middle, abs=0.1)
    assert centre(boxes[4]) == pytest.approx(middle, abs=0.1)
    assert len(layout.edges) == 4


def test_a_job_with_no_dependency_stands_just_before_its_dependent() -> None:
    # 4 needs 3 (after 1 and 2) and 5, which depends on nothing: 5 moves right.
    graph = graph_of([(1, 2), (2, 3), (3, 4), (5, 4)])

    boxes = by_id(lay_out(graph))

    assert boxes[4].layer == 3
    assert boxes[5].layer == 2


@pytest.mark.parametrize("seed", range(6), ids=lambda s: f"seed-{s}")
def test_every_edge_points_right_from_upstream_to_downstream(seed: int) -> None:
    graph = random_dag(60, seed)

    layout = lay_out(graph)

    assert_sound(layout, graph)
    assert len(layout.edges) == len(set(graph.edges))


def test_a_long_edge_runs_between_the_boxes_it_passes() -> None:
    # 1 -> 4 spans two layers where 2 and 3 stand.
    graph = graph_of([(1, 2), (2, 3), (3, 4), (1, 4)])

    layout = lay_out(graph)

    assert_sound(layout, graph)
    boxes = by_id(layout)
    (long,) = [e for e in layout.edges if (e.upstream_id, e.downstream_id) == (1, 4)]
    assert long.d.count("L") == 2
    for passed in (boxes[2], boxes[3]):
        heights = [
            y for x, y in points(long.d) if x in (passed.x, passed.x + BOX_WIDTH)
        ]
        assert heights
        assert not any(within(y, passed) for y in heights)


def test_ordering_undoes_the_crossings_of_the_given_order() -> None:
    # Given order 1, 2 over 3, 4 with 1 -> 4 and 2 -> 3 would cross.
    graph = graph_of([(1, 4), (2, 3), (4, 5), (3, 5)], jobs=[1, 2, 3, 4, 5])

    layout = lay_out(graph)

    assert_sound(layout, graph)
    assert crossings(layout) == 0


def test_ordering_finds_a_drawing_without_crossings_where_one_exists() -> None:
    # Two interleaved trees, given in an order that crosses most edges.
    edges = [(1, 10), (2, 11), (1, 12), (2, 13), (10, 20), (11, 21), (12, 22)]
    graph = graph_of(edges, jobs=[1, 2, 10, 11, 12, 13, 20, 21, 22])

    layout = lay_out(graph)

    assert_sound(layout, graph)
    assert crossings(layout) == 0


def test_a_wide_fan_of_100_stacks_in_one_layer() -> None:
    graph = graph_of([(1, i) for i in range(2, 102)])

    layout = lay_out(graph)

    assert_sound(layout, graph)
    boxes = by_id(layout)
    assert {boxes[i].layer for i in range(2, 102)} == {1}
    assert layout.layers == 2
    assert layout.height == 2 * MARGIN + 100 * BOX_HEIGHT + 99 * ROW_GAP
    fan = [centre(boxes[i]) for i in range(2, 102)]
    assert centre(boxes[1]) == pytest.approx(sum(fan) / len(fan), abs=0.1)
    assert layout.downstream == 100


def test_a_500_job_graph_lays_out_in_seconds_even_at_the_dependency_cap() -> None:
    sparse = random_dag(500, seed=7)
    # Up to the store's cap of dependencies per job, on any job before it.
    dense = random_dag(500, seed=8, most=MAX_DEPENDENCIES, reach=500)

    started = time.perf_counter()
    sparse_layout = lay_out(sparse)
    sparse_took = time.perf_counter() - started
    started = time.perf_counter()
    dense_layout = lay_out(dense)
    dense_took = time.perf_counter() - started

    assert len(dense.edges) > 10_000
    assert sparse_took < 1.0
    assert dense_took < 5.0
    assert_sound(sparse_layout, sparse)
    assert_sound(dense_layout, dense)


def test_the_layout_is_the_same_every_time() -> None:
    graph = random_dag(120, seed=3)
    rebuilt = DependencyGraph(
        graph.job_id, [replace(j) for j in graph.jobs], list(graph.edges)
    )

    first = lay_out(graph)

    assert lay_out(graph) == first
    assert lay_out(rebuilt) == first


@pytest.mark.timeout(10)
def test_a_cycle_ends_and_every_job_still_gets_a_box() -> None:
    # The store refuses cycles; the layout must still end if one slipped through.
    graph = graph_of([(1, 2), (2, 3), (3, 1), (3, 4), (4, 4)])

    layout = lay_out(graph)

    boxes = by_id(layout)
    assert sorted(boxes) == [1, 2, 3, 4]
    assert len(layout.edges) == 4
    assert len({(b.layer, b.y) for b in layout.jobs}) == 4
    for edge in layout.edges:
        assert edge.d.startswith("M")
    assert layout.upstream == 2
    assert layout.downstream == 3


def test_edges_to_jobs_the_graph_left_out_are_dropped() -> None:
    graph = DependencyGraph(1, [job(1), job(2)], [(1, 2), (1, 99), (98, 2), (1, 2)])

    layout = lay_out(graph)

    assert [(e.upstream_id, e.downstream_id) for e in layout.edges] == [(1, 2)]
    assert_sound(layout, graph)


def test_a_single_job_is_laid_out_alone() -> None:
    layout = lay_out(DependencyGraph(7, [job(7)], []))

    assert layout.alone
    assert layout.edges == ()
    (box,) = layout.jobs
    assert (box.x, box.y) == (MARGIN, MARGIN)
    assert layout.width == 2 * MARGIN + BOX_WIDTH
    assert layout.height == 2 * MARGIN + BOX_HEIGHT


def test_a_graph_without_its_own_job_is_refused() -> None:
    with pytest.raises(ValueError, match="job 5 does not hold that job"):
        lay_out(DependencyGraph(5, [job(1)], []))


def test_counts_upstream_and_downstream_of_the_page_job() -> None:
    graph = graph_of([(1, 3), (2, 3), (0, 1), (3, 4), (4, 5), (9, 5)], job_id=3)

    layout = lay_out(graph)

    assert (layout.upstream, layout.downstream) == (3, 2)
    assert not layout.alone
    assert layout.job_name == "job-3"


def test_boxes_carry_the_latest_run_and_the_flags() -> None:
    graph = DependencyGraph(
        2,
        [
            job(2, state=RunState.FAILED, schedule="0 2 * * *"),
            job(1, state=None, enabled=False),
        ],
        [(1, 2)],
    )

    boxes = by_id(lay_out(graph))

    assert (boxes[2].state, boxes[2].run_id, boxes[2].current) == ("failed", 1002, True)
    assert boxes[2].schedule == "0 2 * * *"
    assert (boxes[1].state, boxes[1].run_id, boxes[1].enabled) == (None, None, False)
    assert not boxes[1].current
    assert lay_out(graph).states == (("failed", 1), ("never run", 1))


@pytest.mark.parametrize(
    ("name", "shortened"),
    [
        ("backup-database", False),
        ("extract-customers-from-the-crm-nightly", True),
        ("m" * 13, True),
        ("i" * 25, False),
        ("a" * 200, True),
    ],
    ids=["short", "long", "wide-letters", "narrow-letters", "longest"],
)
def test_long_names_are_shortened_to_fit_the_box(name: str, shortened: bool) -> None:
    graph = DependencyGraph(1, [job(1, name), job(2)], [(1, 2)])

    box = by_id(lay_out(graph))[1]

    assert box.name == name
    assert (box.label != name) is shortened
    if shortened:
        assert box.label.endswith("…")
        assert name.startswith(box.label[:-1])
    room = (BOX_WIDTH - 2 * TEXT_PADDING) / NAME_PX
    assert sum(layout_module._em(c) for c in box.label.rstrip("…")) <= room


def test_shorten_keeps_what_fits() -> None:
    assert shorten("abcdef", width=NAME_PX * 10) == "abcdef"
    # 5 em less the ellipsis leaves 4: five letters of 0.72 em, and no room for "f".
    assert shorten("abcdefghijklmnopqrstuvwxyz", width=NAME_PX * 5) == "abcde…"


# The partial


def render(layout: GraphLayout) -> str:
    template = build_templates().env.get_template("partials/graph.html")
    return template.render(graph=layout)


def parse(html: str) -> ET.Element:
    """Parse the partial, which is also well-formed XML, to look at its structure."""
    return ET.fromstring(html)


def links(root: ET.Element) -> dict[str, ET.Element]:
    return {a.attrib["href"]: a for a in root.iter("a")}


def test_the_partial_links_every_box_to_its_job_page() -> None:
    graph = graph_of([(1, 2), (2, 3), (4, 3)], job_id=2)

    root = parse(render(lay_out(graph)))

    assert set(links(root)) == {f"/jobs/job-{i}" for i in (1, 2, 3, 4)}
    assert links(root)["/jobs/job-2"].attrib["aria-current"] == "page"
    assert "aria-current" not in links(root)["/jobs/job-1"].attrib
    (picture,) = [g for g in root.iter("g") if g.attrib.get("role") == "img"]
    assert picture.find("title") is not None
    assert picture.find("desc") is not None
    assert len(list(root.iter("path"))) == 3 + 1  # three edges and the arrowhead


def test_the_partial_escapes_names_in_text_and_links() -> None:
    crafted = "<x>&\"y'/z"
    graph = DependencyGraph(1, [job(1, crafted), job(2)], [(1, 2)])

    html = render(lay_out(graph))

    assert "<x>" not in html
    assert "&lt;x&gt;&amp;" in html
    root = parse(html)
    assert "/jobs/%3Cx%3E%26%22y%27%2Fz" in links(root)
    names = [t.text for t in root.iter("text") if t.attrib["class"] == "graph-name"]
    assert names[0] == crafted
    title = links(root)["/jobs/%3Cx%3E%26%22y%27%2Fz"].find("title")
    assert title is not None
    assert title.text is not None
    assert title.text.startswith(crafted)


def test_the_partial_summarises_and_says_each_state_in_words() -> None:
    graph = DependencyGraph(
        3,
        [
            job(3, state=RunState.RUNNING),
            job(1, state=RunState.FAILED, enabled=False),
            job(2, state=None),
            job(4, state=RunState.SUCCEEDED),
        ],
        [(1, 3), (2, 3), (3, 4)],
    )

    root = parse(render(lay_out(graph)))

    desc = root.find(".//desc")
    assert desc is not None
    assert desc.text == (
        "job-3: 2 upstream, 1 downstream. "
        "Latest runs: 1 running, 1 succeeded, 1 failed, 1 never run."
    )
    states = [t.text for t in root.iter("text") if t.attrib["class"] == "graph-state"]
    assert states == ["running", "paused · failed", "never run", "succeeded"]
    classes = [
        g.attrib["class"]
        for g in root.iter("g")
        if "graph-job" in g.attrib.get("class", "")
    ]
    assert classes == [
        "graph-job state-running current",
        "graph-job state-failed paused",
        "graph-job state-none",
        "graph-job state-succeeded",
    ]


def test_the_partial_notes_a_cut_graph() -> None:
    graph = graph_of([(1, 2)], truncated=True)

    root = parse(render(lay_out(graph)))

    notes = [p for p in root.iter("p") if p.attrib.get("class") == "graph-note"]
    assert len(notes) == 1
    assert "only the first 2 jobs" in (notes[0].text or "")


def test_the_partial_says_a_lone_job_has_no_dependencies() -> None:
    root = parse(render(lay_out(DependencyGraph(7, [job(7, "lonely")], []))))

    assert root.find(".//svg") is None
    assert "".join(root.itertext()).strip() == (
        "lonely has no dependencies, and no job depends on it."
    )


def test_the_stylesheet_colours_each_run_state_the_pills_colour() -> None:
    css = CSS.read_text()
    pills = set(re.findall(r"^\.state-(\w+)", css, flags=re.MULTILINE))
    pills |= set(re.findall(r", \.state-(\w+)", css))
    boxes = set(re.findall(r"\.graph-job\.state-(\w+) rect", css))

    run_states = {state.value for state in RunState}
    assert pills & run_states
    assert boxes == pills & run_states
