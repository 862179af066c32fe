"""Knowledge distillation: a student trained on a frozen teacher's outputs (DistilBERT).

General distillation (`distill.task` "pretraining"; Sanh et al. 2019,
arXiv 1910.01108, section 3, and HF transformers'
examples/research_projects/distillation, README and `distiller.py`), per
batch of masked-LM examples, with s and t the student's and the teacher's
outputs:

    loss = alpha_ce  * T^2 * KL(softmax(t_mlm / T) || softmax(s_mlm / T))
         + alpha_mlm * cross-entropy(s_mlm, masked tokens)
         + alpha_cos * (1 - cos(s_hidden, t_hidden))

The KL and the cross-entropy are means over the masked positions
(`masked_lm_weights`; HF: KLDivLoss "batchmean" over the selected
positions), the cosine term a mean over real tokens of the last hidden
states (HF: CosineEmbeddingLoss over the attention mask). DistilBERT's
defaults: T = 2, alpha_ce 5, alpha_mlm 2, alpha_cos 1, no NSP. HF computes
the KL over every real token unless `--restrict_ce_to_mask`; here the models
compute MLM logits only at the masked positions, so it is always that
restricted form. T^2 keeps the soft targets' gradients at the hard ones'
scale as T changes (Hinton et al. 2015, arXiv 1503.02531, section 2).

Task-specific distillation (`distill.task` "glue" or "classify"): the
teacher is a fine-tuned classification checkpoint or workdir, and

    loss = alpha_ce * T^2 * KL(teacher/T || student/T) over the labels
         + alpha_label * cross-entropy with the gold labels
         (+ alpha_cos * the hidden-state cosine term, default 0)

(HF's `run_squad_w_distillation.py` defaults: T = 2, alpha_ce 0.5, task
loss 0.5). For regression (STS-B) both terms are squared errors: to the
teacher's score and to the gold one.

The student: the teacher's architecture with num_layers =
len(distill.student_layers), initialised from the teacher's embeddings,
the chosen layers (in the order given), pooler and head (DistilBERT takes
layers [0, 2, 4, 7, 9, 11] of BERT-base; HF `scripts/extract_distilbert.py`).
With student_layers empty the student is what `model.*`/`init_checkpoint`
say, as in any run (e.g. a general-distilled student for task-specific
distillation).

The teacher is the task's frozen model (`Task.frozen`, `FrozenModel`): the
trainer places its params with the same logical-axis rules as the
student's, in `TrainState.frozen` (outside the optimizer state and the
checkpoints), and the step adds `frozen_outputs` (under
`jax.lax.stop_gradient`, dropout off) to each microbatch before `loss`.
Data, evaluation (the student's) and prediction are the base task's
(`PretrainingTask` or `ClassificationTask`) on the teacher's vocabulary.
`data.train_files="embedded"` here means the embedded corpus's text
(`embedded_pretraining`) made into examples with the teacher's vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from bert_jax.checkpoints import formats as checkpoint_formats
from bert_jax.checkpoints import pretrained
from bert_jax.models.bert import BertConfig, BertModel, config_for_size
from bert_jax.models.heads import BertForPreTraining, BertForSequenceClassification
from bert_jax.tasks.base import FrozenModel, Task
from bert_jax.tasks.classification import ClassificationTask
from bert_jax.tasks.model_setup import model_config
from bert_jax.tasks.pretraining import PretrainingTask

BASES = {"pretraining": PretrainingTask, "glue": ClassificationTask, "classify": ClassificationTask}
# BertConfig fields a student from teacher layers may set differently from its teacher.
NUMERICS = (
    "hidden_dropout",
    "attention_dropout",
    "initializer_range",
    "dtype",
    "param_dtype",
    "scan_layers",
    "remat_policy",
    "vocab_pad_multiple",
    "attention_impl",
)
# Weights that apply to general (MLM) or task-specific distillation only.
GENERAL_ONLY, TASK_ONLY = ("alpha_mlm",), ("alpha_label",)


# ----------------------------------------------------------------------------
# The loss terms (float32, per position or example; the task averages them).
# ----------------------------------------------------------------------------


def soft_kl(student_logits, teacher_logits, temperature: float):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)) over the last axis."""
    t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, -1)
    s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, -1)
    return jnp.sum(jnp.exp(t) * (t - s), -1) * temperature**2


def cosine_distance(student_hidden, teacher_hidden):
    """1 - cos(student, teacher) over the last (hidden) axis."""
    s, t = student_hidden.astype(jnp.float32), teacher_hidden.astype(jnp.float32)
    norms = jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1)
    return 1.0 - jnp.sum(s * t, -1) / jnp.maximum(norms, 1e-8)


def _mean(values, weights):
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-5)


class DistillTask(Task):
    """`config.task` "distill": the base task `distill.task` with a teacher (module docstring)."""

    def __init__(self, config):
        self.config = config
        d = config.distill
        if d.task not in BASES:
            raise ValueError(f"distill.task={d.task!r}: choose one of {sorted(BASES)}")
        self.general = d.task == "pretraining"
        if not d.teacher_checkpoint:
            raise ValueError(
                "set distill.teacher_checkpoint (any checkpoint or workdir "
                "bert_jax.checkpoints.pretrained.load reads)"
            )
        try:
            self.teacher_config = pretrained.load_config(d.teacher_checkpoint)
        except (OSError, pretrained.CheckpointError) as e:
            raise ValueError(f"config key distill.teacher_checkpoint: {e}") from e
        self._check_weights()
        self.layers = tuple(int(i) for i in d.student_layers)
        n = self.teacher_config.num_layers
        bad = [i for i in self.layers if not 0 <= i < n]
        if bad:
            raise ValueError(
                f"distill.student_layers={list(self.layers)}: {bad} out of range for the "
                f"teacher's {n} layers (0..{n - 1})"
            )
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"distill.student_layers={list(self.layers)} repeats a layer")
        if self.layers and config.init_checkpoint:
            raise ValueError(
                f"init_checkpoint={config.init_checkpoint!r} and distill.student_layers="
                f"{list(self.layers)}: the student starts from one of them (set "
                "distill.student_layers=() to start from init_checkpoint)"
            )
        if self.general and config.nsp:
            raise ValueError("nsp=True: distillation trains no NSP head (DistilBERT drops it)")
        # The base task reads this copy: its own task name, the teacher's vocabulary.
        view = config.copy_and_resolve_references()
        view.task = d.task
        view.data.vocab_file = self._vocab_file()
        self.base = BASES[d.task](view)

    def _check_weights(self) -> None:
        d = self.config.distill
        if d.temperature <= 0:
            raise ValueError(f"distill.temperature must be positive, got {d.temperature}")
        names = ["alpha_ce", "alpha_cos"] + list(GENERAL_ONLY if self.general else TASK_ONLY)
        for key in ("alpha_ce", "alpha_mlm", "alpha_cos", "alpha_label"):
            if d[key] < 0:
                raise ValueError(f"distill.{key} must be >= 0, got {d[key]}")
            if key not in names and d[key]:
                raise ValueError(
                    f"distill.{key}={d[key]} does not apply to distill.task={d.task!r} (set it 0)"
                )
        if not any(d[k] for k in names):
            raise ValueError(
                f"every loss weight is 0: set one of {['distill.' + k for k in names]}"
            )

    def _vocab_file(self) -> str:
        """data.vocab_file, else the teacher's vocab.txt ("" when neither: records only)."""
        d, teacher = self.config.data, Path(self.config.distill.teacher_checkpoint)
        if d.vocab_file:
            if not Path(d.vocab_file).is_file():
                raise FileNotFoundError(f"data.vocab_file {d.vocab_file} does not exist")
            return d.vocab_file
        if (teacher / "vocab.txt").is_file():
            return str(teacher / "vocab.txt")
        if not self.general:
            raise ValueError(
                f"set data.vocab_file: distill.teacher_checkpoint {teacher} has no vocab.txt"
            )
        return ""

    # --- the student -----------------------------------------------------------
    @functools.cached_property
    def student_config(self) -> BertConfig:
        t = self.teacher_config
        if not self.layers:
            cfg = model_config(self.config)
        else:
            m = self.config.model
            if m.size:
                sized = config_for_size(m.size)
                for key in ("hidden_size", "num_heads", "intermediate_size"):
                    if getattr(sized, key) != getattr(t, key):
                        raise ValueError(
                            f"model.size={m.size!r}: {key} {getattr(sized, key)} vs the "
                            f"teacher's {getattr(t, key)}; a student from teacher layers has "
                            "the teacher's width (leave model.size empty)"
                        )
            for key in m:
                want = len(self.layers) if key == "num_layers" else getattr(t, key, None)
                if key in ("size", *NUMERICS) or m[key] is None or m[key] == want:
                    continue
                raise ValueError(
                    f"model.{key}={m[key]}: a student from distill.student_layers has the "
                    f"teacher's {key} ({want}); leave it unset"
                )
            numerics = {k: m[k] for k in NUMERICS if m.get(k) is not None}
            cfg = dataclasses.replace(t, num_layers=len(self.layers), **numerics)
        if cfg.vocab_size != t.vocab_size:
            raise ValueError(
                f"the student's vocab_size {cfg.vocab_size} is not the teacher's {t.vocab_size}"
            )
        if self.config.distill.alpha_cos and cfg.hidden_size != t.hidden_size:
            raise ValueError(
                f"distill.alpha_cos={self.config.distill.alpha_cos} compares hidden states: "
                f"student hidden_size {cfg.hidden_size} vs the teacher's {t.hidden_size}"
            )
        return cfg

    def model(self):
        if self.general:
            return BertForPreTraining(self.student_config, nsp=False)
        n = 1 if self.base.regression else len(self.base.labels)
        return BertForSequenceClassification(self.student_config, num_labels=n)

    def initial_params(self, target: dict) -> dict:
        """`target` (the fresh student's params) with the teacher's embeddings,
        `student_layers`, pooler and head where it has one of the same shapes."""
        if not self.layers:
            return target
        tmodel, tparams = self._teacher()
        canon_model, canon = checkpoint_formats.with_overrides(
            tmodel, tparams, pretrained.CANONICAL
        )
        tree = {"bert": canon} if isinstance(canon_model, BertModel) else canon
        bert = tree["bert"]
        layers = {f"layer_{j}": bert["encoder"][f"layer_{i}"] for j, i in enumerate(self.layers)}
        student = {"bert": {**bert, "encoder": layers}}
        head = "mlm" if self.general else "classifier"
        if head in tree:
            student[head] = tree[head]
        # The per-layer, unpadded tree -> the student's layout (nn.scan, vocab padding).
        cfg = self.student_config
        model = self.model()
        canon_student = model.clone(config=dataclasses.replace(cfg, **pretrained.CANONICAL))
        _, student = checkpoint_formats.with_overrides(
            canon_student,
            student,
            {"scan_layers": cfg.scan_layers, "vocab_pad_multiple": cfg.vocab_pad_multiple},
        )
        flat = {_key(p): v for p, v in jax.tree_util.tree_flatten_with_path(student)[0]}
        fresh = []

        def pick(path, leaf):
            got = flat.pop(_key(path), None)
            if got is None or (path[0].key == head and got.shape != leaf.shape):
                fresh.append(_key(path))
                return leaf
            if got.shape != leaf.shape:
                raise pretrained.CheckpointError(
                    f"{_key(path)}: teacher {got.shape} vs student {leaf.shape}"
                )
            return np.asarray(got, leaf.dtype)

        out = jax.tree_util.tree_map_with_path(pick, target)
        logging.info(
            "student from teacher %s layers %s; fresh: %s",
            self.config.distill.teacher_checkpoint,
            list(self.layers),
            fresh or "none",
        )
        return out

    # --- the teacher -----------------------------------------------------------
    @functools.cache  # noqa: B019 (one task per run; the checkpoint is read once)
    def _teacher(self):
        d = self.config.distill
        model, params = pretrained.load(d.teacher_checkpoint, dtype=self.config.model.dtype)
        if self.general and d.alpha_ce and not isinstance(model, BertForPreTraining):
            raise ValueError(
                f"distill.alpha_ce={d.alpha_ce} needs the teacher's MLM logits, but "
                f"distill.teacher_checkpoint {d.teacher_checkpoint} is a {type(model).__name__} "
                "without an MLM head (set distill.alpha_ce=0 to distil hidden states only)"
            )
        if not self.general:
            want = 1 if self.base.regression else len(self.base.labels)
            kernel = params.get("classifier", {}).get("dense", {}).get("kernel")
            if not isinstance(model, BertForSequenceClassification) or kernel.shape[-1] != want:
                raise ValueError(
                    f"distill.teacher_checkpoint {d.teacher_checkpoint}: a fine-tuned "
                    f"classifier with {want} outputs is needed, got a {type(model).__name__}"
                    + ("" if kernel is None else f" with {kernel.shape[-1]}")
                )
        return model, params

    def _teacher_inputs(self, inputs: dict) -> dict:
        if isinstance(self._teacher()[0], BertModel):  # no heads: no masked positions
            inputs = {k: v for k, v in inputs.items() if k != "masked_positions"}
        return inputs

    def frozen(self) -> FrozenModel:
        """The teacher, read from `distill.teacher_checkpoint` (once per task)."""
        model, params = self._teacher()
        inputs = self._teacher_inputs(self.model_inputs(self.dummy_batch()))
        return FrozenModel(module=model, inputs=inputs, params=params)

    def frozen_outputs(self, params, batch) -> dict:
        """The teacher's logits and last hidden states for `batch`, without gradients."""
        model = self._teacher()[0]
        out = model.apply(
            {"params": jax.lax.stop_gradient(params)},
            **self._teacher_inputs(self.model_inputs(batch)),
            deterministic=True,
        )
        res = {"teacher_hidden": out["sequence_output"]}
        logits = out.get("mlm_logits" if self.general else "logits")
        if logits is not None:
            res["teacher_logits"] = logits
        return jax.lax.stop_gradient(res)

    # --- the loss ----------------------------------------------------------------
    def loss(self, outputs, batch):
        d = self.config.distill
        parts = {}
        if self.general:
            logits, w = outputs["mlm_logits"], batch["masked_lm_weights"]  # (B, P, V), (B, P)
            if d.alpha_ce:
                parts["ce_loss"] = (
                    d.alpha_ce,
                    _mean(soft_kl(logits, batch["teacher_logits"], d.temperature), w),
                )
            if d.alpha_mlm:
                xent = optax.softmax_cross_entropy_with_integer_labels(
                    logits, batch["masked_lm_ids"]
                )
                parts["mlm_loss"] = (d.alpha_mlm, _mean(xent, w))
        else:
            logits = outputs["logits"]  # (B, C), or (rows, K, C) packed
            w = batch["valid"] if "valid" in batch else jnp.ones(logits.shape[:-1])
            w = w.astype(jnp.float32)
            if self.base.regression:
                soft = (logits[..., 0] - batch["teacher_logits"][..., 0]) ** 2
                hard = (logits[..., 0] - batch["label"]) ** 2
            else:
                soft = soft_kl(logits, batch["teacher_logits"], d.temperature)
                hard = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
            if d.alpha_ce:
                parts["ce_loss"] = (d.alpha_ce, _mean(soft, w))
            if d.alpha_label:
                parts["label_loss"] = (d.alpha_label, _mean(hard, w))
        if d.alpha_cos:
            real = self.model_inputs(batch)["attention_mask"].astype(jnp.float32)  # (B, L)
            dist = cosine_distance(outputs["sequence_output"], batch["teacher_hidden"])
            parts["cos_loss"] = (d.alpha_cos, _mean(dist, real))
        total = sum(alpha * value for alpha, value in parts.values())
        return total, {name: value for name, (_, value) in parts.items()}

    # --- data, evaluation and prediction: the base task's ----------------------
    @property
    def labels(self):
        return self.base.labels

    def tokenizer(self):
        return self.base.tokenizer()

    def dummy_batch(self):
        return self.base.dummy_batch()

    def model_inputs(self, batch):
        return self.base.model_inputs(batch)

    def train_source(self, process_index: int, process_count: int):
        self._resolve_embedded()
        return self.base.train_source(process_index, process_count)

    def eval_sets(self, process_index: int, process_count: int):
        self._resolve_embedded()
        return self.base.eval_sets(process_index, process_count)

    def eval_stats(self, outputs, batch):
        return self.base.eval_stats(outputs, batch)

    def finalize(self, eval_set, stats):
        return self.base.finalize(eval_set, stats)

    def predict(self, forward, inputs, run_metrics):
        return self.base.predict(forward, inputs, run_metrics)

    def _resolve_embedded(self) -> None:
        """data.{train,eval}_files "embedded" -> the embedded corpus in the teacher's vocabulary."""
        data = self.base.config.data
        if not self.general or "embedded" not in (data.train_files, data.eval_files):
            return
        paths = self._embedded()
        for key in ("train_files", "eval_files"):
            if data[key] == "embedded":
                data[key] = paths[key]

    @functools.cache  # noqa: B019 (built once on disk)
    def _embedded(self) -> dict[str, str]:
        from bert_jax.data.pretraining import create_pretraining_data
        from bert_jax.data.pretraining import embedded as embedded_pretraining
        from bert_jax.data.pretraining.instances import RecipeConfig

        c, d = self.config, self.config.data
        vocab = self.base.config.data.vocab_file
        if not vocab:
            raise ValueError(
                "data.train_files='embedded' needs the teacher's vocabulary: set data.vocab_file "
                f"(distill.teacher_checkpoint {c.distill.teacher_checkpoint} has no vocab.txt)"
            )
        root = Path(os.path.expanduser(d.embedded_dir or "~/.cache/bert_jax"))
        seq, pred = c.max_seq_length, c.max_predictions_per_seq
        # The corpus text, split as the pretraining data's (90% / 10% of the documents).
        text = embedded_pretraining.prepare(str(root), seq, pred, dupe_factor=1, verbose=False)
        digest = hashlib.sha256(Path(vocab).read_bytes() + bytes([d.do_lower_case])).hexdigest()
        out = root / f"distill-{digest[:12]}-s{seq}-p{pred}-d{d.dupe_factor}"
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        for split, dupe in (("train", d.dupe_factor), ("eval", 1)):
            path = out / f"{split}.tfrecord"
            if not path.exists():
                tmp = out / f".{split}.{os.getpid()}.tfrecord"
                create_pretraining_data.run(
                    [str(text[f"{split}_txt"])],
                    [str(tmp)],
                    vocab,
                    RecipeConfig(
                        max_seq_length=seq, max_predictions_per_seq=pred, dupe_factor=dupe
                    ),
                    do_lower_case=d.do_lower_case,
                    num_workers=1,
                )
                tmp.rename(path)
            files[f"{split}_files"] = str(path)
        return files


def _key(path) -> str:
    return "/".join(str(k.key) for k in path)
