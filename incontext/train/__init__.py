"""Training: pure steps (steps.py), optimiser (optim.py), the loop (trainer.py)."""
