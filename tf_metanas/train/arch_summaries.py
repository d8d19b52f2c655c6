"""TensorBoard views of architectures: heatmaps of normalized architecture weights,
pictures of derived cells and a table of genotypes. Call inside a default summary writer.

Tags: Architecture/<name>/op_weights (one image per cell type: rows edges "input -> node",
columns ops), Architecture/<name>/input_weights (rows input combinations, columns cell
types), Architecture/<name> for genotype pictures, Architecture/genotypes (text).
"""

import numpy as np
import tensorflow as tf

from tf_metanas.arch import mixture as mixture_lib
from tf_metanas.search import visualize


def write_image(tag, figure, step):
  """A matplotlib figure as an image summary (the figure is closed)."""
  png = visualize.figure_to_png(figure)
  tf.summary.image(tag, tf.image.decode_png(png, channels=3)[None], step=step)


def write_architecture(name, model, arch, tau_alpha, tau_beta, step):
  """Heatmaps of the op weights (Eq. 5) of both cell types and of the input-combination
  weights (Eq. 7) of architecture tensors `arch` of a SearchNetwork, at the given
  temperatures."""
  mixture = model.mixture(arch, tau_alpha, tau_beta)
  for cell in mixture_lib.CELL_TYPES:
    figure = visualize.plot_weights(
        mixture[f"{cell}_ops"], visualize.edge_names(model.num_nodes), model.op_names,
        f"{name}: {cell} cell op weights (tau_alpha={tau_alpha:g})", xlabel="op",
        ylabel="edge")
    write_image(f"Architecture/{name}/op_weights_{cell}", figure, step)
  if model.input_k:
    _, betas = model.arch_dict(arch)
    columns = [mixture_lib.combination_weights(betas[c], model.num_nodes, model.input_k,
                                               tau_beta) for c in mixture_lib.CELL_TYPES]
    figure = visualize.plot_weights(
        tf.stack(columns, axis=1), visualize.combination_names(model.num_nodes, model.input_k),
        mixture_lib.CELL_TYPES, f"{name}: input-combination weights (tau_beta={tau_beta:g})",
        xlabel="cell", ylabel="input combination")
    write_image(f"Architecture/{name}/input_weights", figure, step)


def write_genotype(name, genotype, step):
  """A picture of both cells of `genotype` and its compact form as a table, one row per node
  (the JSON a program reads is in results.json)."""
  write_image(f"Architecture/{name}", visualize.plot_genotype(genotype, title=name), step)
  tf.summary.text(f"Architecture/{name}_compact", genotype.compact_table(), step=step)


def genotype_table(entries, num_tasks):
  """A markdown table of (genotype, tasks, parameters) entries with their share of tasks,
  each genotype in its compact form (`Genotype.compact`, short op names)."""
  lines = ["| tasks | share | parameters | genotype |", "|---|---|---|---|"]
  for genotype, count, parameters in entries:
    lines.append(f"| {count} | {count / num_tasks:.1%} | {parameters} | "
                 f"`{genotype.compact()}` |")
  return "\n".join(lines)


def write_genotype_table(name, entries, num_tasks, step):
  """`genotype_table` as the text summary Architecture/<name>."""
  tf.summary.text(f"Architecture/{name}", genotype_table(entries, num_tasks), step=step)


def write_adaptation(model, meta_arch, meta_genotype, task_archs, task_genotypes, common,
                     counts, taus, report_tasks, step):
  """The views of one evaluation of a method that adapts the architecture to each task
  (METANAS Fig. 2 and 5, T-NAS Fig. 2 and 5): the meta-architecture's heatmaps and cells
  beside those of the first `report_tasks` adapted tasks (`task_archs[i]`, at temperatures
  `taus`), the most common task genotype and a table of the five most common (`common`:
  [(genotype, tasks, parameters)]), the distribution of the tasks' parameter counts and the
  number of distinct genotypes."""
  write_architecture("meta", model, meta_arch, *taus, step)
  write_genotype("meta/genotype", meta_genotype, step)
  for i in range(min(report_tasks, len(task_genotypes))):
    write_architecture(f"task_{i}", model, task_archs[i], *taus, step)
    write_genotype(f"task_{i}/genotype", task_genotypes[i], step)
  write_genotype("most_common/genotype", common[0][0], step)
  write_genotype_table("task_genotypes", common[:5], len(task_genotypes), step)
  tf.summary.histogram("Architecture/task_parameters", counts, step=step)
  tf.summary.scalar("Architecture/task_parameters_mean", float(np.mean(counts)), step=step)
  tf.summary.scalar("Architecture/distinct_genotypes", len(common), step=step)
