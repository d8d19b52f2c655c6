"""Auto-Meta's surrogate: an LSTM that predicts a cell's score from its blocks (PNAS, Liu et
al. 2018, Sec. 3.2; Auto-Meta, Kim et al. 2018, Table A1: 100 units, 1 layer, Adam 0.01).

A cell is read as a sequence of 4 tokens per block, (input 1, op 1, input 2, op 2), embedded
(inputs and ops in one vocabulary, 0 the padding of shorter cells, masked), run through the
LSTM, and its last state mapped by a dense layer and a sigmoid to a score in [0, 1]
(accuracies). Loss: L1 (PNAS). The papers give neither the epochs nor the batch size: ours
are 50 epochs of batches of 16 (configurable), the model trained anew on every score so
far at each stage, from a fixed seed. PNAS averages an ensemble of 5 predictors; Auto-Meta
names one LSTM, as here.
"""

import gin
import keras
import numpy as np


def spearman(a, b):
  """Spearman's rank correlation of two equal-length sequences (ties get their mean rank);
  nan when either is constant or has fewer than 2 values."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
    return float("nan")
  ra, rb = _ranks(a), _ranks(b)
  return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x):
  order = np.argsort(x, kind="stable")
  ranks = np.empty(x.size)
  ranks[order] = np.arange(x.size, dtype=np.float64)
  for value in np.unique(x):  # ties: the mean of their ranks
    tied = x == value
    ranks[tied] = ranks[tied].mean()
  return ranks


@gin.configurable(module="tf_metanas.methods")
class Surrogate:
  """Predicts cells' scores (see the module docstring).

  Args:
    op_names: the op set of the cells.
    max_blocks: B, the most blocks a cell has.
    units: LSTM units and embedding size (100).
    learning_rate: Adam's (0.01).
    epochs: passes over the scores at each fit (our choice).
    batch_size: cells per Adam step (our choice).
    seed: seeds the weights and the batch order of every fit.
  """

  def __init__(self, op_names, max_blocks, units=100, learning_rate=0.01, epochs=50,
               batch_size=16, seed=0):
    self.op_names, self.max_blocks = tuple(op_names), int(max_blocks)
    self.units, self.learning_rate = int(units), float(learning_rate)
    self.epochs, self.batch_size, self.seed = int(epochs), int(batch_size), int(seed)
    self.model = None

  def encode(self, cells):
    """[len(cells), 4 * max_blocks] int tokens: input i -> 1 + i, op k -> max_blocks + 2 +
    k, 0 after the last block."""
    tokens = np.zeros((len(cells), 4 * self.max_blocks), np.int32)
    op_base = self.max_blocks + 2
    for row, cell in enumerate(cells):
      if cell.num_blocks > self.max_blocks:
        raise ValueError(f"a {cell.num_blocks}-block cell, but the surrogate reads at most "
                         f"{self.max_blocks} blocks")
      sequence = [t for block in cell.blocks for op, i in block
                  for t in (1 + i, op_base + self.op_names.index(op))]
      tokens[row, :len(sequence)] = sequence
    return tokens

  def _build(self):
    keras.utils.set_random_seed(self.seed)
    vocabulary = self.max_blocks + 2 + len(self.op_names)
    model = keras.Sequential([
        keras.layers.Input((4 * self.max_blocks,), dtype="int32"),
        keras.layers.Embedding(vocabulary, self.units, mask_zero=True),
        keras.layers.LSTM(self.units),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="mae")
    return model

  def fit(self, cells, scores):
    """Trains a fresh model on (cell, score) pairs; returns the last epoch's L1 loss."""
    self.model = self._build()
    history = self.model.fit(self.encode(cells), np.asarray(scores, np.float32)[:, None],
                             epochs=self.epochs, batch_size=self.batch_size, shuffle=True,
                             verbose=0)
    return float(history.history["loss"][-1])

  def predict(self, cells):
    """Predicted scores of `cells` (numpy [len(cells)])."""
    if self.model is None:
      raise ValueError("Surrogate.predict before fit: it has seen no scores")
    return self.model.predict(self.encode(cells), batch_size=256, verbose=0)[:, 0]
