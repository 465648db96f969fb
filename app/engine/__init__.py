"""Engine layer: training, evaluation and inference as plain functions that report events. No Qt.

Usable from a notebook, e.g. ``from app.engine.celllm import finetune``.
"""
