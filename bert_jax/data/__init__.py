"""Tokenization and input pipelines."""
