"""Runner: outer loop, checkpoints, summaries, evaluation."""
