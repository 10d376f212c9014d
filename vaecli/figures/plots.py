"""Matplotlib figures as PNG bytes (Agg canvas, no pyplot): latent scatter, image panels, report.

matplotlib itself loads when a figure is first drawn, not with this module: memory estimates and `vae sample`
read its sizes (DPI, labelled_tile_inches, manifold_inches) without drawing anything.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from vaecli.analysis.traversal import Plane

# Okabe and Ito (2008), "Color Universal Design", black moved last so it does not dominate,
# then four of Paul Tol's colour-blind-safe "muted" colours to reach 12 distinct classes.
PALETTE = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#F0E442",  # yellow
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#000000",  # black
    "#999999",  # grey
    "#882255",  # wine
    "#44AA99",  # teal
    "#332288",  # indigo
)
# Past 12 classes the colours repeat, so each round of the palette gets its own marker.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DPI = 150
LEGEND_ROWS = 20  # legend entries per column before another column starts


def class_style(index: int) -> tuple[str, str]:
    """(colour, marker) of class `index`: the same for every figure and every run."""
    return PALETTE[index % len(PALETTE)], MARKERS[(index // len(PALETTE)) % len(MARKERS)]


def new_figure(width: float, height: float) -> Figure:
    """A figure on an Agg canvas, outside pyplot's global state."""
    # Lazy: drawing is the first use of matplotlib (see the module's docstring).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure) -> bytes:
    """Encode the figure as PNG; without a Software tag the same figure gives the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _default_style() -> AbstractContextManager[None]:
    # Ignores the user's matplotlibrc, so a figure looks (and hashes) the same everywhere. Lazy: see new_figure.
    import matplotlib.style

    return matplotlib.style.context("default")


TITLE_FONT = 10  # points
LARGE_TITLE_FONT = 12  # matplotlib's "large", its default for titles
TITLE_MARGIN = 0.03  # of the figure's width, kept free on each side of a fitted title
TITLE_LINE_HEIGHT = 1.2  # a title line's height, in font sizes (matplotlib's default line spacing)


def fit_title(figure: Figure, title: str, fontsize: float = TITLE_FONT, ax: Axes | None = None) -> None:
    """Set the figure's title (or `ax`'s, for an axes as wide as the figure), wrapped at spaces until every
    line fits the figure's width.

    The figure grows by the height of the lines the wrapping added, so the drawing below keeps its size."""
    renderer = cast("FigureCanvasAgg", figure.canvas).get_renderer()  # new_figure's canvas
    room = figure.bbox.width * (1 - 2 * TITLE_MARGIN)
    paragraphs = title.split("\n")
    width = max(len(line) for line in paragraphs)
    while True:
        text = "\n".join(textwrap.fill(line, width) if line else line for line in paragraphs)
        artist = figure.suptitle(text, fontsize=fontsize) if ax is None else ax.set_title(text, fontsize=fontsize)
        extent = artist.get_window_extent(renderer).width
        if extent <= room or width <= 8:
            break
        # Shrink in proportion to the overflow, and by at least one character.
        width = max(8, min(width - 1, int(width * room / extent)))
    added = text.count("\n") - title.count("\n")
    if added:
        inches_wide, inches_high = figure.get_size_inches()
        figure.set_size_inches(inches_wide, inches_high + added * fontsize * TITLE_LINE_HEIGHT / 72)


def latent_scatter_png(
    coords: ArrayLike,
    labels: ArrayLike,
    class_names: Sequence[str],
    xlabel: str,
    ylabel: str,
    title: str,
    order: ArrayLike | None = None,
    class_rows: bool = False,
) -> bytes:
    """Scatter (N, 2) points coloured by label with a legend of class names.

    `order` is the drawing order (a permutation), so no class hides under another;
    `class_rows` puts the class names on the y axis (a 1-D latent drawn one row per class).
    """
    coords = np.asarray(coords, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    order = np.arange(len(labels)) if order is None else np.asarray(order)
    present = sorted(set(labels.tolist()))
    size = float(np.clip(40_000 / max(len(labels), 1), 4, 36))  # marker area in points^2
    with _default_style():
        figure = new_figure(7.5, 6.0)
        ax = figure.add_subplot()
        drawn = labels[order]
        styles = [class_style(int(label)) for label in drawn]
        for marker in sorted({m for _, m in styles}, key=MARKERS.index):
            # One call per marker keeps the shuffled order within it (usually a single call).
            pick = np.array([m == marker for _, m in styles], dtype=bool)
            ax.scatter(
                coords[order[pick], 0], coords[order[pick], 1], s=size, marker=marker,
                c=[colour for (colour, m) in styles if m == marker], alpha=0.75, linewidths=0,
            )
        handles = [
            _legend_handle(label, class_names[label] if label < len(class_names) else str(label))
            for label in present
        ]
        ax.legend(
            handles=handles, title="class", loc="upper left", bbox_to_anchor=(1.01, 1.0),
            ncols=max(1, math.ceil(len(handles) / LEGEND_ROWS)), frameon=False,
        )
        if class_rows:
            ax.set_yticks(present, [class_names[i] if i < len(class_names) else str(i) for i in present])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        return figure_png(figure)


def _legend_handle(index: int, name: str) -> Line2D:
    from matplotlib.lines import Line2D  # lazy: see new_figure

    colour, marker = class_style(index)
    return Line2D([], [], linestyle="none", marker=marker, markersize=7, color=colour, label=name)


def _show_image(ax: Axes, pixels: ArrayLike) -> None:
    """Draw one uint8 (C, H, W) image without axes."""
    array = np.asarray(pixels, dtype=np.uint8)
    if array.shape[0] == 1:
        ax.imshow(array[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(array.transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def image_rows_png(
    rows: Sequence[ArrayLike],
    row_titles: Sequence[str] = (),
    column_titles: Sequence[str] = (),
    title: str = "",
    cell_inches: float = 1.0,
) -> bytes:
    """A table of images: `rows` is a list of uint8 (N, C, H, W) arrays of equal N."""
    arrays = [np.asarray(row) for row in rows]
    columns = max(len(row) for row in arrays)
    with _default_style():
        figure = new_figure(cell_inches * columns + 0.6, cell_inches * len(arrays) + 0.5)
        axes = figure.subplots(len(arrays), columns, squeeze=False)
        for r, row in enumerate(arrays):
            for c in range(columns):
                ax = axes[r][c]
                if c < len(row):
                    _show_image(ax, row[c])
                else:
                    ax.set_axis_off()
                if r == 0 and c < len(column_titles):
                    ax.set_title(column_titles[c], fontsize=8)
            if r < len(row_titles):
                axes[r][0].set_ylabel(row_titles[r], fontsize=9)
        if title:
            fit_title(figure, title, LARGE_TITLE_FONT)
        return figure_png(figure)


def tile(images: ArrayLike, columns: int, padding: int = 2, pad_value: int = 128) -> np.ndarray:
    """uint8 (N, C, H, W) images tiled row by row into one (C, H', W') array."""
    images = np.asarray(images, dtype=np.uint8)
    count, channels, height, width = images.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    grid = np.full(
        (channels, rows * (height + padding) - padding, columns * (width + padding) - padding),
        pad_value, dtype=np.uint8,
    )
    for i in range(count):
        top, left = (i // columns) * (height + padding), (i % columns) * (width + padding)
        grid[:, top:top + height, left:left + width] = images[i]
    return grid


def image_grid_png(images: ArrayLike, columns: int, title: str = "") -> bytes:
    """One figure holding a tiled grid of uint8 (N, C, H, W) images."""
    grid = tile(images, columns)
    height, width = grid.shape[1:]
    side = 6.0
    with _default_style():
        figure = new_figure(side, side * height / width + (0.4 if title else 0.0))
        ax = figure.add_subplot()
        _show_image(ax, grid)
        if title:
            fit_title(figure, title, LARGE_TITLE_FONT, ax)
        return figure_png(figure)


def loss_curves_png(history: Sequence[dict], title: str = "") -> bytes:
    """Train and test reconstruction, KL and total loss per epoch, three panels side by side."""
    epochs = [record["epoch"] for record in history]
    panels = (
        ("recon", "reconstruction -log p(x|z)"),
        ("kl", "KL(q(z|x) || p(z))"),
        ("loss", "total (train: recon + beta KL)"),
    )
    with _default_style():
        figure = new_figure(11.0, 3.6)
        axes = figure.subplots(1, len(panels), squeeze=False)[0]
        for ax, (key, label) in zip(axes, panels, strict=True):
            for split, colour, marker in (("train", PALETTE[4], "o"), ("test", PALETTE[5], "s")):
                values = [record.get(split, {}).get(key, math.nan) for record in history]
                ax.plot(epochs, values, color=colour, marker=marker, markersize=4, label=split)
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("epoch")
            ax.set_ylabel("nats per image")
            ax.grid(True, linewidth=0.3, alpha=0.5)
            if len(epochs) < 12:
                ax.set_xticks(epochs)
        axes[0].legend(frameon=False)
        if title:
            figure.suptitle(title)
        return figure_png(figure)


def kl_bars_png(kl_per_dim: Sequence[float], threshold: float, title: str) -> bytes:
    """A bar per latent dimension of its average KL; bars at or below threshold are grey."""
    dims = list(range(1, len(kl_per_dim) + 1))
    colours = [PALETTE[4] if value > threshold else PALETTE[8] for value in kl_per_dim]
    with _default_style():
        figure = new_figure(max(6.0, min(14.0, 0.35 * len(dims) + 2.0)), 4.0)
        ax = figure.add_subplot()
        ax.bar(dims, kl_per_dim, color=colours, width=0.8)
        ax.axhline(threshold, color=PALETTE[5], linewidth=0.8, linestyle="--",
                   label=f"active above {threshold:g} nats")
        ax.set_xlabel("latent dimension")
        ax.set_ylabel("average KL (nats per image)")
        if len(dims) <= 40:
            ax.set_xticks(dims)
        ax.set_xlim(0.4, len(dims) + 0.6)
        # Below the axes, where no bar can reach: any dimension's bar may be the tallest.
        figure.legend(*ax.get_legend_handles_labels(), frameon=False, loc="outside lower right")
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
        return figure_png(figure)


def roc_curves_png(curves: dict[str, tuple[Sequence[float], Sequence[float], float]], title: str = "") -> bytes:
    """One ROC curve per score: {name: (false-positive rates, true-positive rates, AUROC)}."""
    with _default_style():
        figure = new_figure(5.5, 5.0)
        ax = figure.add_subplot()
        ax.plot([0, 1], [0, 1], color=PALETTE[8], linewidth=0.8, linestyle="--", label="chance (0.500)")
        for index, (name, (fpr, tpr, auroc)) in enumerate(curves.items()):
            ax.plot(fpr, tpr, color=class_style(index)[0], linewidth=1.4, label=f"{name} ({auroc:.3f})")
        ax.set_xlabel("false-positive rate (in-distribution flagged)")
        ax.set_ylabel("true-positive rate (out-of-distribution flagged)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.legend(frameon=False, loc="lower right", title="score (AUROC)")
        if title:
            ax.set_title(title, fontsize=10)
        return figure_png(figure)


CELL_INCHES = 0.55  # how large one decoded image is drawn in the traversal and manifold figures
TICKS_PER_AXIS = 7  # at most this many labelled columns or rows in a manifold


def _draw_tile(ax: Axes, tile: ArrayLike, rows: int, columns: int, x_labels: Sequence[str],
               y_labels: Sequence[str]) -> None:
    """A uint8 (C, H, W) tile of rows x columns cells, each labelled cell centre a tick."""
    _show_image(ax, tile)
    height, width = np.asarray(tile).shape[1:]
    cell_h, cell_w = (height + 2) / rows, (width + 2) / columns  # images.GRID_PADDING between cells
    x_at = [i for i, text in enumerate(x_labels) if text]
    y_at = [i for i, text in enumerate(y_labels) if text]
    ax.set_xticks([(i + 0.5) * cell_w - 1 for i in x_at], [x_labels[i] for i in x_at], fontsize=8)
    ax.set_yticks([(i + 0.5) * cell_h - 1 for i in y_at], [y_labels[i] for i in y_at], fontsize=8)
    ax.tick_params(length=0)


def traversal_png(tile: ArrayLike, row_labels: Sequence[str], column_labels: Sequence[str], title: str) -> bytes:
    """A traversal tile (C, H, W) with a label per row (its dimension and KL) and per column (its value)."""
    return labelled_tile_png(tile, row_labels, column_labels, title, "value of the swept coordinate")


def labelled_tile_png(tile: ArrayLike, row_labels: Sequence[str], column_labels: Sequence[str], title: str,
                      xlabel: str = "", scale: int = 1) -> bytes:
    """A tile (C, H, W) of len(row_labels) x len(column_labels) cells, rows and columns labelled, titled."""
    with _default_style():
        return figure_png(labelled_tile_figure(tile, row_labels, column_labels, title, xlabel, scale))


def labelled_tile_figure(tile: ArrayLike, row_labels: Sequence[str], column_labels: Sequence[str], title: str,
                         xlabel: str = "", scale: int = 1) -> Figure:
    """labelled_tile_png's figure, before encoding (its title's extent can be measured)."""
    rows, columns = len(row_labels), len(column_labels)
    figure = new_figure(*labelled_tile_inches(rows, columns, scale))
    ax = figure.add_subplot()
    _draw_tile(ax, tile, rows, columns, column_labels, row_labels)
    ax.set_xlabel(xlabel)
    fit_title(figure, title)
    return figure


def labelled_tile_inches(rows: int, columns: int, scale: int = 1) -> tuple[float, float]:
    """(width, height) of labelled_tile_png's figure, known before drawing (memory.figure_bytes)."""
    cell = CELL_INCHES * scale
    # At least wide enough for the two-line title, however few steps there are.
    return max(cell * columns + 1.8, 5.5), cell * rows + 1.0


def manifold_inches(size: int, with_codes: bool) -> tuple[float, float]:
    """(width, height) of manifold_png's figure for a size x size grid, with the codes' scatter or not."""
    side = CELL_INCHES * 0.5 * size + 1.5
    return side * (2.1 if with_codes else 1.0), side + 0.6


def _sparse(values: Sequence[float]) -> list[str]:
    """Tick labels for about TICKS_PER_AXIS of the values, always the first and the last."""
    last = len(values) - 1
    step = max(1, math.ceil(last / (TICKS_PER_AXIS - 1)))
    shown = {i for i in range(0, last + 1, step) if last - i >= step or i == last} | {last}
    return [f"{v:.3g}" if i in shown else "" for i, v in enumerate(values)]


def manifold_png(tile: ArrayLike, plane: Plane, title: str, codes: ArrayLike | None = None,
                 labels: ArrayLike | None = None, class_names: Sequence[str] = ()) -> bytes:
    """The decoded grid of a traversal.Plane, with its test codes' scatter beside it when `codes` is given."""
    with _default_style():
        figure = new_figure(*manifold_inches(len(plane.x), codes is not None))
        axes = figure.subplots(1, 2 if codes is not None else 1, squeeze=False)[0]
        _draw_tile(axes[0], tile, len(plane.y), len(plane.x), _sparse(plane.x), _sparse(plane.y))
        axes[0].set_xlabel(plane.xlabel, fontsize=9)
        axes[0].set_ylabel(plane.ylabel, fontsize=9)
        if codes is not None:
            points, labels = np.asarray(codes, dtype=np.float64), np.asarray(labels, dtype=np.int64)
            ax = axes[1]
            colours = [class_style(int(label))[0] for label in labels]
            ax.scatter(points[:, 0], points[:, 1], s=6, c=colours, alpha=0.7, linewidths=0)
            ax.add_patch(_extent(plane))
            present = sorted(set(labels.tolist()))
            ax.legend(handles=[_legend_handle(i, class_names[i] if i < len(class_names) else str(i)) for i in present],
                      title="class", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8,
                      ncols=max(1, math.ceil(len(present) / LEGEND_ROWS)))
            ax.set_xlabel(plane.xlabel, fontsize=9)
            ax.set_ylabel(plane.ylabel, fontsize=9)
            ax.set_title(f"{len(points):,} test codes in the same plane; the box is the grid", fontsize=9)
            ax.grid(True, linewidth=0.3, alpha=0.5)
        fit_title(figure, title)  # the grid alone is narrower than most titles
        return figure_png(figure)


def _extent(plane: Plane) -> Rectangle:
    from matplotlib.patches import Rectangle  # lazy: see new_figure

    x0, x1, y0, y1 = min(plane.x), max(plane.x), min(plane.y), max(plane.y)
    return Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=PALETTE[7], linewidth=1.0, linestyle="--")
