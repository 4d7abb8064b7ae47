"""Draw docs/architecture.svg from the code: the packages of ``invoiceflow`` and who imports whom.

Why this exists: a hand-drawn architecture picture is right on the day it is drawn and wrong a few
commits later. This one is read from the real import graph (grimp, the library import-linter is
built on), so regenerating it after a change shows the architecture as it is, including what
breaks the rules:

- one box per top-level package (``cli``, ``airflow``, the stages, ``core``), top to bottom in
  the layer order of docs/design.md, each listing its modules;
- an arrow from package A to package B when any module of A imports any module of B. Arrows that
  point down (to a lower layer) are allowed and are drawn on the right, one colour per importing
  package; arrows that point up (a reach-back against the layer rule) are drawn on the left in red,
  dashed, with the offending imports in their tooltip;
- a module that imports Airflow is marked; outside ``invoiceflow.airflow`` the mark is red.

Pure Python writing SVG text (no graphviz), deterministic: the same code gives the same bytes.

    python scripts/architecture.py            # write docs/architecture.svg
    python scripts/architecture.py --check    # exit 1 if docs/architecture.svg is out of date
"""

from __future__ import annotations

import argparse
import ast
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "include"
PACKAGE = "invoiceflow"
OUT = ROOT / "docs" / "architecture.svg"

# The layer order of docs/design.md, top to bottom: the entry points, the stages from the last of
# the lifecycle to the first, then core. A package may import the packages below it only.
LAYERS = (
    "cli",
    "airflow",
    "demo",
    "reporting",
    "accounting",
    "collect",
    "send",
    "invoicing",
    "billing",
    "ingest",
    "core",
)
ENTRY_POINTS = ("cli", "airflow")
SEAM = "airflow"  # the only package allowed to import Airflow

# One colour per importing package (none of them red: red is for reach-backs).
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#9c755f",
    "#499894",
    "#59a14f",
    "#b07aa1",
    "#2f4b7c",
    "#a88a00",
    "#79706e",
    "#17a2b8",
    "#8c6bb1",
)
RED = "#d62728"
INK = "#263238"
MUTED = "#607d8b"

# Geometry, in pixels.
MONO, SANS = "DejaVu Sans Mono, Menlo, Consolas, monospace", "DejaVu Sans, Helvetica, Arial, sans-serif"
MONO_SIZE, MONO_ADVANCE = 12, 7.3  # DejaVu Sans Mono advances 0.602 em
SANS_SIZE, SANS_ADVANCE = 11.5, 6.9  # a generous average for DejaVu Sans
LINE = 16
BOX_WIDTH = 600
BOX_PAD = 10
GAP = 30
LANE = 11
GUTTER = 190  # the layer labels on the far left
PORT_STEP = 10
TOP = 86


@dataclass
class Package:
    name: str
    index: int
    modules: list[str]  # relative to the package: "matching", "statements.camt"
    airflow_modules: set[str]
    summary: str
    lines: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)
    y: float = 0.0
    height: float = 0.0
    colour: str = INK


@dataclass
class Edge:
    source: str
    target: str
    imports: list[str]  # "invoicing.approval -> send.outbox"
    upward: bool
    lane: int = 0
    y_from: float = 0.0
    y_to: float = 0.0
    colour: str = INK


def build_graph():
    sys.path.insert(0, str(SOURCE))
    import grimp

    return grimp.build_graph(PACKAGE, include_external_packages=True, cache_dir=None)


def top_level(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def summary_of(name: str) -> str:
    """The first paragraph of the package's (or module's) docstring, on one line."""
    base = SOURCE / PACKAGE / name
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = doc.split("\n\n")[0]
    return " ".join(first.replace("`", "").split())


def read_packages(graph) -> tuple[list[Package], list[Edge], list[str]]:
    ours = sorted(m for m in graph.modules if m == PACKAGE or m.startswith(PACKAGE + "."))
    names = sorted({p for m in ours if (p := top_level(m))})
    unknown = [n for n in names if n not in LAYERS]
    # A package the layer list does not know yet goes just above core, and is reported.
    order = [n for n in LAYERS if n in names and n != "core"] + unknown + (["core"] if "core" in names else [])
    packages = {}
    for index, name in enumerate(order):
        members = [m for m in ours if top_level(m) == name]
        relative = sorted(m.split(".", 2)[2] for m in members if m.count(".") >= 2)
        subpackages = {r for r in relative if any(o.startswith(r + ".") for o in relative)}
        airflow_modules = {
            (m.split(".", 2)[2] if m.count(".") >= 2 else name)
            for m in members
            if any(i == "airflow" or i.startswith("airflow.") for i in graph.find_modules_directly_imported_by(m))
        }
        packages[name] = Package(
            name=name,
            index=index,
            modules=[r for r in relative if r not in subpackages],
            airflow_modules=airflow_modules,
            summary=summary_of(name),
        )
    pairs: dict[tuple[str, str], list[str]] = {}
    for importer in ours:
        source = top_level(importer)
        for imported in graph.find_modules_directly_imported_by(importer):
            target = top_level(imported)
            if source and target and source != target and target in packages:
                short = f"{importer.split('.', 1)[1]} -> {imported.split('.', 1)[1]}"
                pairs.setdefault((source, target), []).append(short)
    edges = [
        Edge(source=s, target=t, imports=sorted(v), upward=packages[t].index < packages[s].index)
        for (s, t), v in sorted(pairs.items(), key=lambda kv: (packages[kv[0][0]].index, packages[kv[0][1]].index))
    ]
    return [packages[n] for n in order], edges, unknown


def layout_text(pkg: Package) -> None:
    """The lines inside a box: the summary (sans), then the modules (mono), wrapped to fit."""
    inner = BOX_WIDTH - 2 * BOX_PAD - 6
    for chunk in textwrap.wrap(pkg.summary, width=int(inner / SANS_ADVANCE)) or [""]:
        pkg.lines.append(("summary", chunk))
    columns = int(inner / MONO_ADVANCE)
    tops = [m for m in pkg.modules if "." not in m]
    nested: dict[str, list[str]] = {}
    for m in pkg.modules:
        if "." in m:
            head, rest = m.split(".", 1)
            nested.setdefault(head, []).append(rest)

    def mark(name: str, full: str) -> str:
        return name + ("*" if full in pkg.airflow_modules else "")

    if not pkg.modules:
        pkg.lines.append(("modules", mark(f"{pkg.name}.py", pkg.name) + "  (a single module)"))
    words = [mark(m, m) for m in tops]
    line = ""
    for word in words:
        candidate = f"{line}  {word}" if line else word
        if len(candidate) > columns and line:
            pkg.lines.append(("modules", line))
            line = word
        else:
            line = candidate
    if line:
        pkg.lines.append(("modules", line))
    for head in sorted(nested):
        prefix = f"{head}/: "
        body = "  ".join(mark(r, f"{head}.{r}") for r in nested[head])
        wrapped = textwrap.wrap(body, width=columns - len(prefix)) or [""]
        for i, chunk in enumerate(wrapped):
            pkg.lines.append(("modules", (prefix if i == 0 else " " * len(prefix)) + chunk))


def assign_lanes(edges: list[Edge], packages: dict[str, Package]) -> int:
    """Inner lanes for short spans, outer lanes for long ones; no two overlapping spans share one."""
    taken: list[list[tuple[int, int]]] = []
    for edge in sorted(edges, key=lambda e: (abs(packages[e.target].index - packages[e.source].index), e.source)):
        low, high = sorted((packages[edge.source].index, packages[edge.target].index))
        for lane, spans in enumerate(taken):
            if all(high < a or b < low for a, b in spans):
                spans.append((low, high))
                edge.lane = lane
                break
        else:
            taken.append([(low, high)])
            edge.lane = len(taken) - 1
    return len(taken)


def assign_ports(side: list[Edge], packages: dict[str, Package]) -> None:
    """Where each edge leaves and enters its boxes, so that edges of one box do not cross there.

    Down the right side a box receives edges in its upper part and sends them from its lower part;
    incoming edges from outer lanes enter lower, outgoing edges to outer lanes leave higher. Up the
    left side it is the mirror image.
    """
    for pkg in packages.values():
        incoming = [e for e in side if e.target == pkg.name]
        outgoing = [e for e in side if e.source == pkg.name]
        if not incoming and not outgoing:
            continue
        upward = (incoming or outgoing)[0].upward
        incoming.sort(key=lambda e: (e.lane, e.source), reverse=upward)
        outgoing.sort(key=lambda e: (-e.lane, e.target), reverse=upward)
        ports = (outgoing + incoming) if upward else (incoming + outgoing)
        step = min(PORT_STEP * 2, (pkg.height - 12) / (len(ports) + 1))
        start = pkg.y + (pkg.height - step * (len(ports) - 1)) / 2
        for i, edge in enumerate(ports):
            y = start + i * step
            if edge.target == pkg.name:
                edge.y_to = y
            else:
                edge.y_from = y


def render(packages: list[Package], edges: list[Edge], unknown: list[str]) -> str:
    by_name = {p.name: p for p in packages}
    for i, pkg in enumerate(p for p in packages if any(e.source == p.name and not e.upward for e in edges)):
        pkg.colour = PALETTE[i % len(PALETTE)]
    for edge in edges:
        edge.colour = RED if edge.upward else by_name[edge.source].colour

    down = [e for e in edges if not e.upward]
    up = [e for e in edges if e.upward]
    down_lanes = assign_lanes(down, by_name)
    up_lanes = assign_lanes(up, by_name)

    ports_needed = {p.name: sum(1 for e in edges if p.name in (e.source, e.target)) for p in packages}
    y = TOP
    for pkg in packages:
        layout_text(pkg)
        content = 28 + LINE * len(pkg.lines) + 6
        pkg.height = max(content, (ports_needed[pkg.name] + 1) * PORT_STEP + 12)
        pkg.y = y
        y += pkg.height + GAP
    assign_ports(down, by_name)
    assign_ports(up, by_name)

    left_lanes_width = (up_lanes + 1) * LANE + 16 if up else 24
    box_x = GUTTER + left_lanes_width
    box_right = box_x + BOX_WIDTH
    width = box_right + (down_lanes + 1) * LANE + 30
    legend_y = y + 4
    height = legend_y + 96

    out: list[str] = []
    add = out.append
    add(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{SANS}" font-size="{SANS_SIZE}">'
    )
    add("<title>invoiceflow: packages by layer and their imports (generated by scripts/architecture.py)</title>")
    add("<defs>")
    for colour in sorted({e.colour for e in edges}):
        ident = colour.lstrip("#")
        add(
            f'<marker id="arrow-{ident}" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" '
            f'markerWidth="9" markerHeight="9" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    add("</defs>")
    add(f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>')
    add(
        f'<text x="20" y="30" font-size="18" font-weight="bold" fill="{INK}">'
        "invoiceflow: packages by layer, and who imports whom</text>"
    )
    add(
        f'<text x="20" y="50" fill="{MUTED}">Generated from the import graph by scripts/architecture.py (grimp). '
        "An arrow A \u2192 B: some module of A imports a module of B.</text>"
    )
    add(f'<text x="20" y="66" fill="{MUTED}">A package may import only the packages below it.</text>')

    # Layer labels on the left, one bracket per group.
    groups = [
        ("entry points", [p for p in packages if p.name in ENTRY_POINTS]),
        ("stages", [p for p in packages if p.name not in ENTRY_POINTS and p.name != "core"]),
        ("core", [p for p in packages if p.name == "core"]),
    ]
    notes = {
        "entry points": ["Airflow seam and CLI:", "may import any stage"],
        "stages": ["later stages on top;", "each imports core and", "the stages below it only"],
        "core": ["imports no stage", "and not Airflow"],
    }
    for label, members in groups:
        if not members:
            continue
        top, bottom = members[0].y, members[-1].y + members[-1].height
        x = GUTTER - 14
        add(f'<path d="M{x},{top:.1f} h-6 V{bottom:.1f} h6" fill="none" stroke="{MUTED}" stroke-width="1.2"/>')
        middle = (top + bottom) / 2 - 8 * len(notes[label])
        add(f'<text x="20" y="{middle:.1f}" font-weight="bold" fill="{INK}">{escape(label)}</text>')
        for i, note in enumerate(notes[label]):
            add(f'<text x="20" y="{middle + 16 * (i + 1):.1f}" fill="{MUTED}">{escape(note)}</text>')

    # Boxes.
    for pkg in packages:
        stroke = RED if pkg.name in unknown else pkg.colour if pkg.colour != INK else MUTED
        add(f'<g id="package-{pkg.name}">')
        add(
            f'<rect x="{box_x}" y="{pkg.y:.1f}" width="{BOX_WIDTH}" height="{pkg.height:.1f}" rx="6" '
            f'fill="#f7f9fa" stroke="{stroke}" stroke-width="1.5"/>'
        )
        add(f'<rect x="{box_x}" y="{pkg.y:.1f}" width="6" height="{pkg.height:.1f}" rx="3" fill="{stroke}"/>')
        title_y = pkg.y + 20
        add(
            f'<text x="{box_x + BOX_PAD + 4}" y="{title_y:.1f}" font-family="{MONO}" font-size="13" '
            f'font-weight="bold" fill="{INK}">{escape(PACKAGE + "." + pkg.name)}</text>'
        )
        count = len(pkg.modules) or 1
        add(
            f'<text x="{box_right - BOX_PAD}" y="{title_y:.1f}" text-anchor="end" fill="{MUTED}">'
            f"{count} module{'s' if count != 1 else ''}</text>"
        )
        for i, (kind, text) in enumerate(pkg.lines):
            ty = title_y + LINE * (i + 1) + 2
            if kind == "summary":
                add(
                    f'<text x="{box_x + BOX_PAD + 4}" y="{ty:.1f}" font-style="italic" fill="{MUTED}">'
                    f"{escape(text)}</text>"
                )
            else:
                add(
                    f'<text x="{box_x + BOX_PAD + 4}" y="{ty:.1f}" font-family="{MONO}" font-size="{MONO_SIZE}" '
                    f'fill="{INK}" xml:space="preserve">{mark_airflow(text, pkg.name == SEAM)}</text>'
                )
        add("</g>")

    # Edges: down the right side, up (reach-backs) the left side.
    for edge in down + up:
        ident = edge.colour.lstrip("#")
        if edge.upward:
            x = box_x - 12 - edge.lane * LANE
            dash = ' stroke-dasharray="6 3"'
            width_px = 2.2
        else:
            x = box_right + 12 + edge.lane * LANE
            dash = ""
            width_px = 1.6
        edge_x = box_x if edge.upward else box_right
        tip = edge_x - 1.5 if edge.upward else edge_x + 1.5
        path = f"M{edge_x},{edge.y_from:.1f} H{x} V{edge.y_to:.1f} H{tip}"
        add(
            f'<path d="{path}" fill="none" stroke="{edge.colour}" stroke-width="{width_px}"{dash} '
            f'marker-end="url(#arrow-{ident})"><title>{escape(edge.source)} \u2192 {escape(edge.target)}'
            f"{' (reach-back)' if edge.upward else ''}: {escape('; '.join(edge.imports))}</title></path>"
        )
        add(f'<circle cx="{edge_x}" cy="{edge.y_from:.1f}" r="2.2" fill="{edge.colour}"/>')

    # Legend.
    lx = box_x
    add(f'<g id="legend" transform="translate({lx},{legend_y:.1f})">')
    add(f'<path d="M0,10 H40" stroke="{PALETTE[0]}" stroke-width="1.6" marker-end="url(#arrow-{PALETTE[0][1:]})"/>')
    add(
        f'<text x="50" y="14" fill="{INK}">allowed import, down the right side '
        "(coloured by the importing package; hover for the modules)</text>"
    )
    add(
        f'<path d="M0,32 H40" stroke="{RED}" stroke-width="2.2" stroke-dasharray="6 3" '
        f'marker-end="url(#arrow-{RED[1:]})"/>'
        if up
        else f'<path d="M0,32 H40" stroke="{RED}" stroke-width="2.2" stroke-dasharray="6 3"/>'
    )
    add(
        f'<text x="50" y="36" fill="{INK}">reach-back: an import of a package above, against the layer rule '
        f"(up the left side; {len(up)} now)</text>"
    )
    outside = sorted(f"{p.name}.{m}" for p in packages if p.name != SEAM for m in p.airflow_modules)
    add(
        f'<text x="0" y="58" font-family="{MONO}" font-size="{MONO_SIZE}" fill="{INK}">*</text>'
        f'<text x="50" y="58" fill="{INK}">imports Airflow (allowed in invoiceflow.airflow only; '
        f"{len(outside)} module{'s' if len(outside) != 1 else ''} elsewhere, marked in red)</text>"
    )
    add(
        f'<text x="0" y="80" fill="{MUTED}">Regenerate: python scripts/architecture.py '
        "(check: --check). The layer order is docs/design.md#layout.</text>"
    )
    add("</g>")
    add("</svg>")
    return "\n".join(out) + "\n"


def mark_airflow(text: str, seam: bool) -> str:
    """Module names with the Airflow mark ``*``, which is red outside the seam."""
    colour = MUTED if seam else RED
    weight = "" if seam else ' font-weight="bold"'
    return escape(text).replace("*", f'<tspan fill="{colour}"{weight}>*</tspan>')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"where to write the SVG (default: {OUT.relative_to(ROOT)})"
    )
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the file differs")
    args = parser.parse_args(argv)

    packages, edges, unknown = read_packages(build_graph())
    svg = render(packages, edges, unknown)

    up = [e for e in edges if e.upward]
    airflow_outside = sorted(f"{p.name}.{m}" for p in packages if p.name != SEAM for m in p.airflow_modules)
    print(f"{len(packages)} packages, {len(edges)} package imports, {len(up)} reach-backs")
    for edge in up:
        print(f"  reach-back {edge.source} -> {edge.target}: {'; '.join(edge.imports)}")
    for name in airflow_outside:
        print(f"  imports Airflow outside the seam: invoiceflow.{name}")
    for name in unknown:
        print(f"  not in the layer list (drawn above core): invoiceflow.{name}", file=sys.stderr)

    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != svg:
            print(f"{args.out} is out of date: run python scripts/architecture.py", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(svg, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
