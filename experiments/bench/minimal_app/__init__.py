"""Flower's floor for the scale benchmark (`experiments/bench/scale.py`)."""
