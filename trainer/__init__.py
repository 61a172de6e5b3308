"""Croc training: trainer, data pipeline and stage configs."""
