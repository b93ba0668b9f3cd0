"""Lay out a job's dependency graph in layers, as SVG numbers.

Pure: it takes the store's `DependencyGraph` and returns boxes and edge paths; the
template (`partials/graph.html`) draws them. The layout is layered (Sugiyama style):

1. Set cycles aside. The store refuses them, but a layout must end whatever it is
   given: an edge that closes a cycle is drawn and constrains nothing.
2. Layer by longest path: a job stands one layer right of its furthest dependency, so
   every edge points left to right, upstream to downstream. A job that depends on
   nothing then moves right, to just before its nearest dependent.
3. Split an edge that spans more than one layer with a virtual point per layer it
   crosses, so that it takes part in ordering and runs between boxes, not through
   them. A budget bounds the points; edges past it are drawn straight across.
4. Order each layer by the barycentres of its neighbours, sweeping down and up a
   few times, and keep the order with the fewest crossings.
5. Place each layer near its neighbours, keeping its order and spacing (an isotonic
   fit), then draw each edge as cubic curves from box side to box side.

Every choice breaks ties by the order the store gave the jobs, so a graph always
gets the same drawing.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from socmeth.models import RunState
from socmeth.store.base import DependencyGraph, GraphJob

BOX_WIDTH = 184
BOX_HEIGHT = 48
COLUMN_GAP = 72
# Between two boxes of a layer, and between a box or an edge and a passing edge.
ROW_GAP = 16
LINE_GAP = 10
MARGIN = 8
# The template writes names at 13 px, TEXT_PADDING in from the box's left side.
NAME_PX = 13
TEXT_PADDING = 10
ELLIPSIS = "…"
# Character widths in em, from the widest common sans-serif (DejaVu Sans Bold):
# job names are lowercase letters, digits and '._-', so three classes do.
NARROW = frozenset("fijlrt.:-1")
WIDE = frozenset("mw")
NARROW_EM, WIDE_EM, OTHER_EM, ELLIPSIS_EM = 0.45, 1.07, 0.72, 1.0
ORDER_SWEEPS = 8
PLACE_ROUNDS = 4
# Virtual points cost time in every sweep; a 500-job graph stays well under a
# second with this many.
VIRTUAL_BUDGET = 4000
# Where several edges meet one side of a box they spread over this much of it.
PORT_SPREAD = 0.6
PORT_STEP = 8
NEVER_RUN = "never run"


@dataclass(frozen=True)
class JobBox:
    """One job: where its box stands, what it says, and how it is drawn."""

    id: int
    name: str
    label: str
    x: float
    y: float
    width: float
    height: float
    layer: int
    current: bool
    enabled: bool
    schedule: str | None
    state: str | None
    run_id: int | None


@dataclass(frozen=True)
class EdgePath:
    """One dependency: `downstream_id` depends on `upstream_id`; `d` is its SVG path,
    from the right side of the upstream box to the left side of the downstream one."""

    upstream_id: int
    downstream_id: int
    d: str


@dataclass(frozen=True)
class GraphLayout:
    """A laid-out dependency graph: the SVG's size, its boxes and its edges."""

    job_id: int
    job_name: str
    width: float
    height: float
    jobs: tuple[JobBox, ...]
    edges: tuple[EdgePath, ...]
    layers: int
    upstream: int
    downstream: int
    truncated: bool
    # How many of the jobs' latest runs are in each state ("never run" last).
    states: tuple[tuple[str, int], ...]

    @property
    def alone(self) -> bool:
        """Tell whether the job has no dependency and nothing depends on it."""
        return self.upstream == 0 and self.downstream == 0


@dataclass
class _Network:
    """The layered graph being laid out: real jobs first, then virtual points."""

    real: int
    layer: list[int]
    preds: list[list[int]]
    succs: list[list[int]]
    rows: list[list[int]] = field(default_factory=list)
    # Each edge as (edge index, the nodes it passes through, first to last).
    routes: list[tuple[int, list[int]]] = field(default_factory=list)

    def add_node(self, layer: int) -> int:
        self.layer.append(layer)
        self.preds.append([])
        self.succs.append([])
        return len(self.layer) - 1

    def link(self, upper: int, lower: int) -> None:
        self.succs[upper].append(lower)
        self.preds[lower].append(upper)


def lay_out(graph: DependencyGraph) -> GraphLayout:
    """Place the jobs of `graph` in layers and draw its edges between them."""
    jobs = _unique_jobs(graph.jobs)
    index = {job.id: i for i, job in enumerate(jobs)}
    if graph.job_id not in index:
        raise ValueError(
            f"the dependency graph of job {graph.job_id} does not hold that job; "
            "a graph always holds the job it is about"
        )

    edges = _known_edges(graph.edges, index)
    order, kept = _topological(len(jobs), edges)
    layer = _layers(len(jobs), order, [edges[e] for e, k in enumerate(kept) if k])
    net = _network(layer, edges, kept)

    net.rows = _ordered_rows(net)
    ys = _placed(net)

    current = index[graph.job_id]
    boxes = [_box(jobs[i], i == current, layer[i], ys[i]) for i in range(len(jobs))]
    layers = max(layer) + 1
    return GraphLayout(
        job_id=graph.job_id,
        job_name=jobs[current].name,
        width=2 * MARGIN + layers * BOX_WIDTH + (layers - 1) * COLUMN_GAP,
        height=_round(max(y + _height(net, n) for n, y in enumerate(ys)) + MARGIN),
        jobs=tuple(boxes),
        edges=tuple(_edge_paths(net, ys, edges, jobs)),
        layers=layers,
        upstream=len(_reach(current, edges, upstream=True)),
        downstream=len(_reach(current, edges, upstream=False)),
        truncated=graph.truncated,
        states=_state_counts(jobs),
    )


def shorten(name: str, width: float = BOX_WIDTH - 2 * TEXT_PADDING) -> str:
    """Cut a name to fit `width` pixels at NAME_PX, an ellipsis for the rest.

    Widths are estimated, erring wide: the server knows no font metrics.
    """
    room = width / NAME_PX
    if sum(_em(char) for char in name) <= room:
        return name

    room -= ELLIPSIS_EM
    kept = 0
    for char in name:
        room -= _em(char)
        if room < 0:
            break
        kept += 1
    return name[:kept] + ELLIPSIS


def _em(char: str) -> float:
    if char in NARROW:
        return NARROW_EM
    return WIDE_EM if char in WIDE else OTHER_EM


# Steps 1 and 2: cycles and layers


def _unique_jobs(jobs: Sequence[GraphJob]) -> list[GraphJob]:
    seen: set[int] = set()
    unique: list[GraphJob] = []
    for job in jobs:
        if job.id not in seen:
            seen.add(job.id)
            unique.append(job)
    return unique


def _known_edges(
    edges: Sequence[tuple[int, int]], index: dict[int, int]
) -> list[tuple[int, int]]:
    """Return the edges between jobs of the graph as index pairs, once each.

    A cut graph may name jobs it left out; a job never depends on itself.
    """
    pairs = {
        (index[a], index[b]) for a, b in edges if a in index and b in index and a != b
    }
    return sorted(pairs)


def _topological(
    count: int, edges: list[tuple[int, int]]
) -> tuple[list[int], list[bool]]:
    """Order the jobs so that every kept edge points forward (Kahn's algorithm).

    Returns the order and, per edge, whether it was kept. When no job is ready, the
    rest hold a cycle: the first of them loses its edges from jobs not yet ordered.
    Each such step orders a job, so the loop ends after `count` of them.
    """
    incoming: list[list[int]] = [[] for _ in range(count)]
    outgoing: list[list[int]] = [[] for _ in range(count)]
    for e, (a, b) in enumerate(edges):
        outgoing[a].append(e)
        incoming[b].append(e)
    waiting = [len(incoming[v]) for v in range(count)]
    kept = [True] * len(edges)
    done = [False] * count
    ready = [v for v in range(count) if waiting[v] == 0]
    heapq.heapify(ready)
    order: list[int] = []

    while len(order) < count:
        if not ready:
            stuck = next(v for v in range(count) if not done[v] and waiting[v])
            for e in incoming[stuck]:
                if not done[edges[e][0]] and kept[e]:
                    kept[e] = False
                    waiting[stuck] -= 1
            heapq.heappush(ready, stuck)

        v = heapq.heappop(ready)
        done[v] = True
        order.append(v)
        for e in outgoing[v]:
            if kept[e]:
                w = edges[e][1]
                waiting[w] -= 1
                if waiting[w] == 0:
                    heapq.heappush(ready, w)
    return order, kept


def _layers(count: int, order: list[int], kept: list[tuple[int, int]]) -> list[int]:
    """Give each job the layer one past its furthest dependency (longest path)."""
    preds: list[list[int]] = [[] for _ in range(count)]
    succs: list[list[int]] = [[] for _ in range(count)]
    for a, b in kept:
        preds[b].append(a)
        succs[a].append(b)

    layer = [0] * count
    for v in order:
        for u in preds[v]:
            layer[v] = max(layer[v], layer[u] + 1)

    # A job that depends on nothing may stand anywhere left of its dependents:
    # just before the nearest one keeps its edges short. Its dependents each have
    # a dependency, so none of them moves here.
    for v in order:
        if not preds[v] and succs[v]:
            layer[v] = min(layer[w] for w in succs[v]) - 1
    return layer


# Step 3: the layered network with virtual points


def _network(
    layer: list[int], edges: list[tuple[int, int]], kept_flags: list[bool]
) -> _Network:
    """Build the network of jobs and virtual points, an edge to a route each.

    Short edges take the budget of virtual points first, so that most edges run
    between boxes; an edge set aside for a cycle runs straight, outside the network.
    """
    count = len(layer)
    net = _Network(
        real=count,
        layer=list(layer),
        preds=[[] for _ in range(count)],
        succs=[[] for _ in range(count)],
    )
    by_span = sorted(
        (e for e in range(len(edges)) if kept_flags[e]),
        key=lambda e: (layer[edges[e][1]] - layer[edges[e][0]], e),
    )
    budget = VIRTUAL_BUDGET
    routes: dict[int, list[int]] = {}
    for e in by_span:
        a, b = edges[e]
        between = layer[b] - layer[a] - 1
        if between > budget:
            routes[e] = [a, b]
            continue
        budget -= between
        chain = [a, *(net.add_node(layer[a] + k) for k in range(1, between + 1)), b]
        for upper, lower in pairwise(chain):
            net.link(upper, lower)
        routes[e] = chain
    for e in range(len(edges)):
        routes.setdefault(e, list(edges[e]))
    net.routes = [(e, routes[e]) for e in range(len(edges))]
    return net


# Step 4: ordering within layers


def _ordered_rows(net: _Network) -> list[list[int]]:
    """Order each layer by barycentres, keeping the sweep with the fewest crossings."""
    rows: list[list[int]] = [[] for _ in range(max(net.layer) + 1)]
    for node, layer in enumerate(net.layer):
        rows[layer].append(node)

    best = [list(row) for row in rows]
    fewest = _crossings(net, rows)
    for sweep in range(ORDER_SWEEPS):
        if fewest == 0:
            break
        if sweep % 2 == 0:
            for i in range(1, len(rows)):
                rows[i] = _by_barycentre(rows[i], rows[i - 1], net.preds)
        else:
            for i in range(len(rows) - 2, -1, -1):
                rows[i] = _by_barycentre(rows[i], rows[i + 1], net.succs)
        crossings = _crossings(net, rows)
        if crossings < fewest:
            fewest = crossings
            best = [list(row) for row in rows]
    return best


def _by_barycentre(
    row: list[int], fixed: list[int], neighbours: list[list[int]]
) -> list[int]:
    """Sort a layer by the mean position of each node's neighbours in `fixed`.

    A node with no neighbour there keeps its own position; ties keep the order.
    """
    position = {node: i for i, node in enumerate(fixed)}

    def key(item: tuple[int, int]) -> tuple[float, int]:
        here, node = item
        near = neighbours[node]
        if not near:
            return float(here), here
        return sum(position[n] for n in near) / len(near), here

    return [node for _, node in sorted(enumerate(row), key=key)]


def _crossings(net: _Network, rows: list[list[int]]) -> int:
    """Count the crossings of segments between each pair of adjacent layers.

    The segments sorted by their upper end cross as often as their lower ends are
    out of order, so each pair of layers counts the inversions of that sequence.
    """
    total = 0
    for upper, lower in pairwise(rows):
        position = {node: i for i, node in enumerate(lower)}
        ends = sorted(
            (i, position[w]) for i, v in enumerate(upper) for w in net.succs[v]
        )
        total += _inversions([end for _, end in ends], len(lower))
    return total


def _inversions(values: list[int], size: int) -> int:
    """Count the pairs out of order in `values` (each in 0..size-1): a Fenwick tree
    of the values seen so far, O(n log size)."""
    tree = [0] * (size + 1)
    inversions = 0
    for seen, value in enumerate(values):
        # Values seen so far greater than this one are out of order with it.
        at_most = 0
        i = value + 1
        while i > 0:
            at_most += tree[i]
            i -= i & -i
        inversions += seen - at_most
        i = value + 1
        while i <= size:
            tree[i] += 1
            i += i & -i
    return inversions


# Step 5: vertical places and edge paths


def _height(net: _Network, node: int) -> float:
    return BOX_HEIGHT if node < net.real else 0.0


def _offsets(net: _Network, row: list[int]) -> list[float]:
    """Return how far below the top of its layer each node stands at the least:
    the heights above it, ROW_GAP between boxes and LINE_GAP beside an edge."""
    offsets = [0.0]
    for upper, lower in pairwise(row):
        both_boxes = upper < net.real and lower < net.real
        gap = ROW_GAP if both_boxes else LINE_GAP
        offsets.append(offsets[-1] + _height(net, upper) + gap)
    return offsets


def _placed(net: _Network) -> list[float]:
    """Give every node a top y: near its neighbours, in its layer's order, spaced.

    Rounds pull each layer towards its upper neighbours, then its lower ones; a last
    pass looks both ways. The result is shifted so the highest node is at MARGIN.
    """
    ys = [0.0] * len(net.layer)
    for row in net.rows:
        for node, offset in zip(row, _offsets(net, row), strict=True):
            ys[node] = offset

    passes = [net.preds, net.succs] * PLACE_ROUNDS
    both = [p + s for p, s in zip(net.preds, net.succs, strict=True)]
    for neighbours in [*passes, both]:
        rows = net.rows if neighbours is not net.succs else net.rows[::-1]
        for row in rows:
            _place_row(net, row, ys, neighbours)

    shift = MARGIN - min(ys)
    return [y + shift for y in ys]


def _place_row(
    net: _Network, row: list[int], ys: list[float], neighbours: list[list[int]]
) -> None:
    """Move a layer's nodes as near as the spacing allows to their neighbours' mean.

    With offsets o_i (the heights and gaps above node i), the spacing constraint
    y_i+1 >= y_i + h_i + gap becomes a non-decreasing z_i = y_i - o_i: the least
    squares fit is an isotonic regression, solved exactly by pooling.
    """
    offsets = _offsets(net, row)
    wanted: list[float] = []
    for node, offset in zip(row, offsets, strict=True):
        height = _height(net, node)
        near = neighbours[node]
        if near:
            centre = sum(ys[n] + _height(net, n) / 2 for n in near) / len(near)
            target = centre - height / 2
        else:
            target = ys[node]
        wanted.append(target - offset)

    for node, z, o in zip(row, _isotonic(wanted), offsets, strict=True):
        ys[node] = z + o


def _isotonic(values: list[float]) -> list[float]:
    """Return the non-decreasing sequence nearest to `values` (pool adjacent
    violators)."""
    blocks: list[tuple[float, int]] = []
    for value in values:
        total, count = value, 1
        while blocks and blocks[-1][0] / blocks[-1][1] > total / count:
            previous_total, previous_count = blocks.pop()
            total += previous_total
            count += previous_count
        blocks.append((total, count))
    fitted: list[float] = []
    for total, count in blocks:
        fitted.extend([total / count] * count)
    return fitted


def _x(net: _Network, node: int) -> float:
    return MARGIN + net.layer[node] * (BOX_WIDTH + COLUMN_GAP)


def _edge_paths(
    net: _Network,
    ys: list[float],
    edges: list[tuple[int, int]],
    jobs: list[GraphJob],
) -> list[EdgePath]:
    """Draw each edge through its route, its ends spread along the box sides."""
    leaving: dict[int, list[tuple[float, int]]] = {}
    arriving: dict[int, list[tuple[float, int]]] = {}
    for e, chain in net.routes:
        leaving.setdefault(chain[0], []).append((ys[chain[1]], e))
        arriving.setdefault(chain[-1], []).append((ys[chain[-2]], e))
    starts = _ports(leaving, ys)
    ends = _ports(arriving, ys)

    paths: list[EdgePath] = []
    for e, chain in net.routes:
        first, last = chain[0], chain[-1]
        points = [(_x(net, first) + BOX_WIDTH, starts[e])]
        for node in chain[1:-1]:
            points.append((_x(net, node), ys[node]))
            points.append((_x(net, node) + BOX_WIDTH, ys[node]))
        points.append((_x(net, last), ends[e]))
        a, b = edges[e]
        paths.append(EdgePath(jobs[a].id, jobs[b].id, _path(points)))
    return paths


def _ports(
    sides: dict[int, list[tuple[float, int]]], ys: list[float]
) -> dict[int, float]:
    """Spread the edges meeting one side of a box along it, in their order."""
    ports: dict[int, float] = {}
    for node, meeting in sides.items():
        meeting.sort()
        centre = ys[node] + BOX_HEIGHT / 2
        spread = min(BOX_HEIGHT * PORT_SPREAD, (len(meeting) - 1) * PORT_STEP)
        step = spread / (len(meeting) - 1) if len(meeting) > 1 else 0.0
        for i, (_, e) in enumerate(meeting):
            ports[e] = centre - spread / 2 + i * step
    return ports


def _path(points: list[tuple[float, float]]) -> str:
    """Write an SVG path: a cubic curve for each hop between layers, a straight
    line across each layer a virtual point stands in."""
    (x, y), *rest = points
    parts = [f"M{_num(x)} {_num(y)}"]
    for i, (nx, ny) in enumerate(rest):
        if i % 2 == 1:
            parts.append(f"L{_num(nx)} {_num(ny)}")
        else:
            # Control points half way across, level with each end: the curve
            # leaves and meets each box side horizontally. An edge going back (a
            # cycle) still leaves rightwards and loops round.
            reach = max(abs(nx - x) / 2, COLUMN_GAP / 2)
            parts.append(
                f"C{_num(x + reach)} {_num(y)} {_num(nx - reach)} {_num(ny)} "
                f"{_num(nx)} {_num(ny)}"
            )
        x, y = nx, ny
    return " ".join(parts)


def _num(value: float) -> str:
    text = f"{value:.1f}"
    text = text[:-2] if text.endswith(".0") else text
    return "0" if text == "-0" else text


def _round(value: float) -> float:
    return round(value, 1)


def _box(job: GraphJob, current: bool, layer: int, y: float) -> JobBox:
    run = job.latest_run
    return JobBox(
        id=job.id,
        name=job.name,
        label=shorten(job.name),
        x=MARGIN + layer * (BOX_WIDTH + COLUMN_GAP),
        y=_round(y),
        width=BOX_WIDTH,
        height=BOX_HEIGHT,
        layer=layer,
        current=current,
        enabled=job.enabled,
        schedule=job.schedule,
        state=run.state.value if run else None,
        run_id=run.id if run else None,
    )


# Summary


def _reach(start: int, edges: list[tuple[int, int]], *, upstream: bool) -> set[int]:
    """Return the jobs reachable from `start` against or along the edges."""
    step: dict[int, list[int]] = {}
    for a, b in edges:
        here, there = (b, a) if upstream else (a, b)
        step.setdefault(here, []).append(there)
    seen: set[int] = set()
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for there in step.get(node, []):
            if there not in seen and there != start:
                seen.add(there)
                frontier.append(there)
    return seen


def _state_counts(jobs: list[GraphJob]) -> tuple[tuple[str, int], ...]:
    counts = Counter(
        job.latest_run.state.value if job.latest_run else NEVER_RUN for job in jobs
    )
    order = [state.value for state in RunState] + [NEVER_RUN]
    return tuple((state, counts[state]) for state in order if counts[state])
