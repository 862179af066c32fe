"""Flax Linen BERT encoder and task heads."""
