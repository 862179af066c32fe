"""Task families: each contributes its model head, input pipeline, loss and metrics.

The trainer looks a task up by `config.task` here: the one registry, at the
data boundary (models and the trainer are plain imports).
"""

from __future__ import annotations

from typing import Any


def get(config: Any):
    """Build the task named by `config.task`."""
    from bert_jax.tasks import classification, multiple_choice, ner, pretraining, squad

    registry = {
        "pretraining": pretraining.PretrainingTask,
        "glue": classification.ClassificationTask,
        "classify": classification.ClassificationTask,
        "ner": ner.NerTask,
        "squad": squad.SquadTask,
        "multiple_choice": multiple_choice.MultipleChoiceTask,
    }
    if config.task not in registry:
        raise ValueError(
            f"unknown task {config.task!r} (config key 'task'); known tasks: {sorted(registry)}"
        )
    return registry[config.task](config)
