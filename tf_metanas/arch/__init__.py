"""How architecture logits become mixture weights (softmax with temperature, ...)."""
