"""Pictures of architectures: genotypes (each cell as a DAG of its nodes with the ops on
the edges) and heatmaps of normalized architecture weights."""

import io
import pathlib
import textwrap

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib import patches  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from tf_metanas.search import genotype as genotype_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_metanas.search import topology  # pylint: disable=g-import-not-at-top,wrong-import-position

_COLORS = {"input": "#a6cee3", "node": "#fdbf6f", "output": "#b2df8a"}


def _positions(num_nodes):
  pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
  for j in range(num_nodes):
    pos[j + 2] = (1.0 + j, 1.2 * (-1) ** j * (0.5 if j else 0.0))
  pos["out"] = (num_nodes + 1.0, 0.0)
  return pos


def _op_color(op):
  """A fixed color per op name (the same in every picture)."""
  names = sorted(genotype_lib.SHORT_NAMES)
  index = names.index(op) if op in names else len(names)
  return plt.get_cmap("tab20")(index % 20)


# Edges keeping more ops than this are drawn as one arrow labelled with their count, the ops
# listed beside the cell: more curved arrows between two nodes would not be readable.
MAX_ARROWS_PER_EDGE = 2


def _edges(nodes):
  """[(input, node index, [ops])] of a cell, in node order."""
  out = []
  for j, node in enumerate(nodes):
    by_input = {}
    for op, i in node:
      by_input.setdefault(i, []).append(op)
    out += [(i, j, ops) for i, ops in by_input.items()]
  return out


def _short(op):
  return genotype_lib.SHORT_NAMES.get(op, op)


def _draw_arrows(ax, pos, edges):
  """One arrow per (op, input) pair, curved apart on an edge with several, colored by op, and
  their legend; returns nothing."""
  for i, j, ops in edges:
    for k, op in enumerate(ops):
      rad = 0.0 if len(ops) == 1 else 0.45 * (k - (len(ops) - 1) / 2)
      ax.annotate("", xy=pos[j + 2], xytext=pos[i],
                  arrowprops=dict(arrowstyle="-|>", color=_op_color(op), lw=2.0,
                                  shrinkA=14, shrinkB=14, connectionstyle=f"arc3,rad={rad}"))
  used = sorted({op for _, _, ops in edges for op in ops})
  ax.legend(handles=[patches.Patch(color=_op_color(op), label=f"{_short(op)} = {op}")
                     for op in used], fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0),
            frameon=False)


def _draw_counted(ax, pos, edges):
  """One grey arrow per edge labelled with how many ops it keeps, and beside the cell the
  list of every edge's ops (short names, with a key of them)."""
  for i, j, ops in edges:
    ax.annotate("", xy=pos[j + 2], xytext=pos[i],
                arrowprops=dict(arrowstyle="-|>", color="0.45", lw=1.5, shrinkA=14, shrinkB=14))
    (x0, y0), (x1, y1) = pos[i], pos[j + 2]
    ax.text(x0 + 0.6 * (x1 - x0), y0 + 0.6 * (y1 - y0), str(len(ops)), ha="center",
            va="center", fontsize=8, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="0.6"))
  lines = [f"{input_name(i)} -> {j}: {' '.join(_short(op) for op in ops)}" for i, j, ops in edges]
  used = sorted({op for _, _, ops in edges for op in ops})
  lines += [""] + [f"{_short(op)} = {op}" for op in used]
  ax.text(1.0, 1.0, "\n".join(lines), transform=ax.transAxes, va="top", ha="left",
          fontsize=7, family="monospace")


def draw_cell(ax, nodes, title):
  """Draws one cell (a Genotype's `normal` or `reduce`) on a matplotlib axis: one arrow per
  (op, input) pair, curved apart where an input feeds a node through several ops, colored
  by op, with a legend of the ops (short names: `Genotype.compact`); a cell with an edge
  keeping more than MAX_ARROWS_PER_EDGE ops (a task-specific METANAS cell early in
  training) as one arrow per edge labelled with its number of ops, the ops listed beside."""
  pos = _positions(len(nodes))
  labels = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}"}
  edges = _edges(nodes)
  if edges and max(len(ops) for _, _, ops in edges) > MAX_ARROWS_PER_EDGE:
    _draw_counted(ax, pos, edges)
  elif edges:
    _draw_arrows(ax, pos, edges)
  for j in range(len(nodes)):
    ax.annotate("", xy=pos["out"], xytext=pos[j + 2],
                arrowprops=dict(arrowstyle="->", color="0.75", ls="--", shrinkA=14, shrinkB=14))
  for key, (x, y) in pos.items():
    kind = "input" if key in (0, 1) else "output" if key == "out" else "node"
    ax.text(x, y, labels.get(key, str(key - 2) if key != "out" else ""), ha="center",
            va="center", fontsize=9, bbox=dict(boxstyle="circle", fc=_COLORS[kind], ec="0.3"))
  ax.set_title(title, fontsize=10)
  ax.set_xlim(-0.6, len(nodes) + 1.6)
  ax.set_ylim(-1.9, 1.9)
  ax.axis("off")


def plot_genotype(genotype, path=None, title=""):
  """Draws the normal and reduction cells one above the other; saves a PNG if `path` is
  given.

  Returns:
    The matplotlib figure (closed if it was saved).
  """
  fig, axes = plt.subplots(2, 1, figsize=(1.6 * (genotype.num_nodes + 2) + 2.6, 6.4))
  draw_cell(axes[0], genotype.normal, f"{title} normal cell".strip())
  draw_cell(axes[1], genotype.reduce, f"{title} reduction cell".strip())
  fig.tight_layout()
  if path is not None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
  return fig


def input_name(i):
  """Name of a cell input: c_{k-2}, c_{k-1} for the cell inputs, else the node index."""
  return ("c_{k-2}", "c_{k-1}")[i] if i < 2 else str(i - 2)


def edge_names(num_nodes):
  """'input -> node' for every edge, in edge-index order."""
  names = [""] * topology.num_edges(num_nodes)
  for j, edges in enumerate(topology.node_edges(num_nodes)):
    for e, i in edges:
      names[e] = f"{input_name(i)} -> {j}"
  return names


def combination_names(num_nodes, k):
  """'node j: a + b' for every input combination, in the flat Eq. 7 order."""
  return [f"node {j}: " + " + ".join(input_name(i) for i in combo)
          for j, combos in enumerate(topology.input_combinations(num_nodes, k))
          for combo in combos]


def plot_weights(weights, row_labels, column_labels, title, xlabel="", ylabel="", marks=None):
  """A heatmap of normalized weights in [0, 1] with labelled axes, values printed in the
  cells, and a color bar. `marks`: {row: column} outlines that cell in red (a fixed edge's
  op), {row: None} hatches the row out (a dropped edge). Returns the figure."""
  weights = np.asarray(weights, np.float64)
  rows, cols = weights.shape
  width = max(1.6 + 0.95 * cols, 4.8)  # wide enough for the title and the axis labels
  fig, ax = plt.subplots(figsize=(width, 1.5 + 0.38 * rows))
  image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
  ax.set_xticks(range(cols), column_labels, rotation=35, ha="right", fontsize=8)
  ax.set_yticks(range(rows), row_labels, fontsize=8)
  for r in range(rows):
    for c in range(cols):
      ax.text(c, r, f"{weights[r, c]:.2f}", ha="center", va="center", fontsize=6.5,
              color="black" if weights[r, c] > 0.6 else "white")
  for r, c in (marks or {}).items():
    if c is None:
      ax.add_patch(patches.Rectangle((-0.5, r - 0.5), cols, 1, fill=True, fc="0.85",
                                     ec="0.5", hatch="///", zorder=2))
    else:
      ax.add_patch(patches.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=2.0,
                                     zorder=3))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(textwrap.fill(title, int(9 * width)), fontsize=9)  # ~9 characters an inch
  fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
  fig.tight_layout()
  return fig


def plot_consolidation(decisions, num_nodes, op_names, step, title="consolidation"):
  """A timeline of consolidation decisions, one panel per cell type: rows are the edges,
  the x axis the meta-iteration; a fixed edge is a dot colored by its op and labelled with
  it, a dropped edge a grey cross, an edge still free a line up to `step`.

  Args:
    decisions: [{"step", "cell", "edge", "op"}] (op None: dropped), in any order.
    num_nodes: intermediate nodes per cell.
    op_names: the op set (fixes each op's color).
    step: the current meta-iteration (the right end of the time axis).
  """
  names = edge_names(num_nodes)
  colors = plt.get_cmap("tab10")
  end = max([step] + [d["step"] for d in decisions]) or 1
  fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(names) + 1.6), sharey=True)
  for ax, cell in zip(axes, ("normal", "reduce")):
    decided = {d["edge"]: d for d in decisions if d["cell"] == cell}
    for e in range(len(names)):
      stop = decided[e]["step"] if e in decided else end
      ax.plot([0, stop], [e, e], color="0.8", lw=1.0, zorder=1)
      if e not in decided:
        continue
      op = decided[e]["op"]
      if op is None:
        ax.plot(stop, e, marker="x", color="0.45", ms=7, zorder=2)
        continue
      ax.plot(stop, e, marker="o", ms=8, color=colors(list(op_names).index(op) % 10), zorder=3)
      ax.text(stop + 0.015 * end, e, op, va="center", fontsize=7)
    fixed = sum(1 for d in decided.values() if d["op"] is not None)
    ax.set_title(f"{cell} cell: {fixed} fixed, "
                 f"{sum(1 for d in decided.values() if d['op'] is None)} dropped, "
                 f"{len(names) - len(decided)} free", fontsize=9)
    ax.set_xlim(0, end * 1.25)
    ax.set_xlabel("meta-iteration")
    ax.set_yticks(range(len(names)), names, fontsize=8)
  axes[0].invert_yaxis()  # edge 0 on top (the axes share it: once)
  fig.suptitle(f"{title} (meta-iteration {step})", fontsize=10)
  fig.tight_layout()
  return fig


def pca_projection(points, dims=2):
  """(projected points [n, dims], explained variance ratio [dims]) of `points` [n, d] on
  their first principal components (centered; SVD)."""
  points = np.asarray(points, np.float64)
  centered = points - points.mean(axis=0)
  _, singular, vt = np.linalg.svd(centered, full_matrices=False)
  total = float(np.sum(singular ** 2)) or 1.0
  vt = np.pad(vt[:dims], ((0, max(dims - len(vt), 0)), (0, 0)))
  singular = np.pad(singular[:dims], (0, max(dims - len(singular), 0)))
  return centered @ vt.T, singular ** 2 / total


def plot_pca(groups, title, marked=None, muted=()):
  """A scatter of labelled point sets on the first two principal components of all of them
  (BASE Fig. 3). `groups`: label -> [n, d] points; `marked`: label -> one [d] point drawn
  as a star (e.g. the meta prior); `muted`: labels drawn in grey (e.g. "other")."""
  marked = marked or {}
  labels = list(groups) + list(marked)
  stacked = [np.asarray(groups[k], np.float64).reshape(-1, np.shape(groups[k])[-1])
             for k in groups] + [np.asarray(marked[k], np.float64)[None] for k in marked]
  projected, explained = pca_projection(np.concatenate(stacked))
  fig, ax = plt.subplots(figsize=(6.4, 5.2))
  start = 0
  for index, (label, points) in enumerate(zip(labels, stacked)):
    part = projected[start:start + len(points)]
    start += len(points)
    if label in marked:
      ax.scatter(part[:, 0], part[:, 1], marker="*", s=260, c="black", edgecolors="white",
                 label=label, zorder=3)
    else:
      color = "#9e9e9e" if label in muted else plt.cm.tab10(index % 10)
      ax.scatter(part[:, 0], part[:, 1], s=28, alpha=0.75, color=color,
                 label=f"{label} ({len(points)})")
  ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of the variance)")
  ax.set_ylabel(f"PC 2 ({explained[1]:.0%} of the variance)")
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8, loc="best", framealpha=0.85)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def plot_cells(cells, titles):
  """Block cells (`search.blocks.BlockCell`) one above the other, each titled. Returns the
  figure."""
  width = 1.6 * (max(c.num_blocks for c in cells) + 2) + 2.6
  fig, axes = plt.subplots(len(cells), 1, figsize=(max(width, 7.0), 3.2 * len(cells)),
                           squeeze=False)
  for ax, cell, title in zip(axes[:, 0], cells, titles):
    draw_cell(ax, cell.blocks, title)
  fig.tight_layout()
  return fig


def plot_depth_distribution(depths_by_stage, title):
  """Stacked bars, one per stage, of the share of cells at each depth (Auto-Meta Fig. 2).

  Args:
    depths_by_stage: stage -> the depths of that stage's cells.
  """
  stages = sorted(depths_by_stage)
  deepest = max(max(d, default=1) for d in depths_by_stage.values())
  fig, ax = plt.subplots(figsize=(1.4 + 1.1 * len(stages), 3.8))
  bottom = np.zeros(len(stages))
  for depth in range(1, deepest + 1):
    share = np.array([np.mean(np.asarray(depths_by_stage[s]) == depth)
                      if depths_by_stage[s] else 0.0 for s in stages])
    ax.bar([f"b={s}" for s in stages], share, bottom=bottom, label=f"D{depth}",
           color=plt.cm.viridis(depth / (deepest + 1)))
    bottom += share
  ax.set_ylabel("share of the stage's top cells")
  ax.set_ylim(0, 1)
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="depth")
  fig.tight_layout()
  return fig


def figure_to_png(fig):
  """PNG bytes of a figure, which is closed."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=90)
  plt.close(fig)
  return buffer.getvalue()
