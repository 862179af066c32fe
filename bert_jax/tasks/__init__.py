"""Task families: each contributes its model head, input pipeline, loss and metrics.

The trainer looks a task up by `config.task` here: the one registry, at the
data boundary (models and the trainer are plain imports). What a task must
provide is written down in `bert_jax/tasks/base.py` (`Task`).
"""

from __future__ import annotations

from bert_jax.tasks import classification, distill, multiple_choice, ner, pretraining, squad
from bert_jax.tasks.base import Task

REGISTRY = {
    "pretraining": pretraining.PretrainingTask,
    "glue": classification.ClassificationTask,
    "classify": classification.ClassificationTask,
    "ner": ner.NerTask,
    "squad": squad.SquadTask,
    "multiple_choice": multiple_choice.MultipleChoiceTask,
    "distill": distill.DistillTask,
}


def get(config) -> Task:
    """Build the task named by `config.task` (cheap: no data is read)."""
    if config.task not in REGISTRY:
        raise ValueError(
            f"unknown task {config.task!r} (config key 'task'); known tasks: {sorted(REGISTRY)}"
        )
    return REGISTRY[config.task](config)
