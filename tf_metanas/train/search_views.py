"""TensorBoard views of an Auto-Meta search (search_dir/events), written after each stage.

Tags (step = the stage b, the cells' number of blocks):
  Search/scores               histogram of the stage's measured scores (meta-val accuracy)
  Search/best_score           the best score of the stage
  Search/spearman             the surrogate's rank correlation, predicted vs measured
  Search/failed               candidates of the stage that failed
  Search/depth_distribution   the depths of every stage's top cells so far (Fig. 2)
  Search/best_cells           pictures of the stage's three best cells
  Search/stage_table          the stage's ranking as a markdown table (the top 20)
  Search/final                the best cell and its final meta-test (text, at the end)
"""

import tensorflow as tf

from tf_metanas.search import blocks
from tf_metanas.search import visualize
from tf_metanas.train import arch_summaries

_TABLE_ROWS = 20
_PICTURES = 3


class SearchViews:
  """Writes the views into `directory` (a summary writer opened on first use)."""

  def __init__(self, directory):
    self.directory, self._writer = str(directory), None

  def _default(self):
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(self.directory)
    return self._writer.as_default()

  def close(self):
    if self._writer is not None:
      self._writer.close()

  def write_stage(self, stage, rows, stages, beam_size):
    """The views of `stage` from its ranked rows and every stage summary so far."""
    scored = [r for r in rows if r["status"] == "ok"]
    with self._default():
      if scored:
        tf.summary.histogram("Search/scores", [r["score"] for r in scored], step=stage)
        tf.summary.scalar("Search/best_score", scored[0]["score"], step=stage)
        cells = [blocks.BlockCell.from_dict(r["cell"]) for r in scored[:_PICTURES]]
        titles = [f"stage {stage} #{r['rank']}: score {r['score']:.3f}, depth {r['depth']}"
                  for r in scored[:_PICTURES]]
        arch_summaries.write_image("Search/best_cells", visualize.plot_cells(cells, titles),
                                   stage)
      tf.summary.scalar("Search/failed", len(rows) - len(scored), step=stage)
      if stages[-1]["spearman"] is not None:
        tf.summary.scalar("Search/spearman", stages[-1]["spearman"], step=stage)
      depths = {s["stage"]: [r["depth"] for r in s["ranked"] if r["status"] == "ok"][:beam_size]
                for s in stages}
      arch_summaries.write_image(
          "Search/depth_distribution",
          visualize.plot_depth_distribution(depths, f"depth of each stage's top {beam_size} "
                                                    f"cells"), stage)
      tf.summary.text("Search/stage_table", stage_table(rows), step=stage)

  def write_final(self, summary):
    """The best cell and, if run, its final meta-test."""
    lines = [f"**best cell** (stage {summary['best_stage']}, meta-val score "
             f"{summary['best_score']:.4f}): `{summary['best_summary']}`"]
    final = summary.get("final")
    if final:
      lines.append(f"**final meta-test**: {100 * final['accuracy']:.2f}% +- "
                   f"{100 * final['ci95']:.2f}% over {final['num_tasks']} "
                   f"{final['num_ways']}-way {final['num_shots']}-shot test tasks "
                   f"(transductive BatchNorm "
                   f"{'on' if final['transductive_batch_norm'] else 'off'}), "
                   f"{final['meta_iterations']} meta-iterations, "
                   f"{final['parameters']:.0f} weights")
    with self._default():
      tf.summary.text("Search/final", "\n\n".join(lines), step=len(summary["stages"]))


def stage_table(rows):
  """A stage's ranking as a markdown table (the first rows)."""
  lines = ["| rank | score | predicted | depth | cell |", "|---|---|---|---|---|"]
  for r in rows[:_TABLE_ROWS]:
    score = f"{r['score']:.4f}" if r["status"] == "ok" else "failed"
    predicted = "-" if r.get("predicted") is None else f"{r['predicted']:.4f}"
    lines.append(f"| {r['rank']} | {score} | {predicted} | {r['depth']} | `{r['summary']}` |")
  if len(rows) > _TABLE_ROWS:
    lines.append(f"\n{len(rows) - _TABLE_ROWS} more in the stage's CSV")
  return "\n".join(lines)
