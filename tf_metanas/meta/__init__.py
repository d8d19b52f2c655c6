"""Meta-learning engine: pure inner optimizers, the functional inner loop, meta-learners."""
