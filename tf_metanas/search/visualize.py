"""Pictures of genotypes: each cell as a DAG of its nodes with the ops on the edges."""

import pathlib

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

_COLORS = {"input": "#a6cee3", "node": "#fdbf6f", "output": "#b2df8a"}


def _positions(num_nodes):
  pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
  for j in range(num_nodes):
    pos[j + 2] = (1.0 + j, 1.2 * (-1) ** j * (0.5 if j else 0.0))
  pos["out"] = (num_nodes + 1.0, 0.0)
  return pos


def draw_cell(ax, nodes, title):
  """Draws one cell (a Genotype's `normal` or `reduce`) on a matplotlib axis."""
  pos = _positions(len(nodes))
  labels = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}"}
  for j, node in enumerate(nodes):
    ops_by_input = {}
    for op, i in node:
      ops_by_input.setdefault(i, []).append(op)
    for i, ops in ops_by_input.items():
      (x0, y0), (x1, y1) = pos[i], pos[j + 2]
      ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                  arrowprops=dict(arrowstyle="->", color="0.3", shrinkA=14, shrinkB=14))
      ax.text((x0 + x1) / 2, (y0 + y1) / 2, "\n".join(ops), fontsize=7, ha="center",
              va="center", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none",
                                     alpha=0.8))
    ax.annotate("", xy=pos["out"], xytext=pos[j + 2],
                arrowprops=dict(arrowstyle="->", color="0.7", ls="--", shrinkA=14, shrinkB=14))
  for key, (x, y) in pos.items():
    kind = "input" if key in (0, 1) else "output" if key == "out" else "node"
    ax.text(x, y, labels.get(key, str(key - 2) if key != "out" else ""), ha="center",
            va="center", fontsize=9, bbox=dict(boxstyle="circle", fc=_COLORS[kind], ec="0.3"))
  ax.set_title(title)
  ax.set_xlim(-0.6, len(nodes) + 1.6)
  ax.set_ylim(-1.8, 1.8)
  ax.axis("off")


def plot_genotype(genotype, path=None, title=""):
  """Draws the normal and reduction cells side by side; saves a PNG if `path` is given.

  Returns:
    The matplotlib figure (closed if it was saved).
  """
  fig, axes = plt.subplots(2, 1, figsize=(1.8 * (genotype.num_nodes + 2), 6.4))
  draw_cell(axes[0], genotype.normal, f"{title} normal cell".strip())
  draw_cell(axes[1], genotype.reduce, f"{title} reduction cell".strip())
  fig.tight_layout()
  if path is not None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
  return fig
