"""Training: pretraining the biLM, and training scoring heads."""
