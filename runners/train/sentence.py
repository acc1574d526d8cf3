"""The sentence-transformers runner: ``SentenceTransformerTrainer`` on the spec's data, loss chosen from its shape.

Runs in every rank. The loss comes from :func:`runners.plan.st_losses.choose_loss` (the same function the planner
shows), the evaluator from the data: a clustering evaluator (k-means on the embeddings, v-measure against the
labels) plus triplet accuracy for ``(text, label)``; triplet accuracy for ``(anchor, positive[, negative])``;
embedding-similarity correlation for ``(text1, text2, score|label)``. Their scores reach ``events.jsonl`` through
the ftui Trainer callback as ``eval_<name>_<metric>`` (``eval_clustering_v_measure``, ``eval_triplet_cosine_accuracy``).

The model is the spec's sentence-transformers model, or a Transformer + mean Pooling built from a plain
transformers model; a directory with only a config.json gets a random init (said in the event stream), which is
how the demo and the tests train offline.
"""
from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path
from typing import Any

from runners import data
from runners import events as ev
from runners.errors import UserError, did_you_mean
from runners.plan import cadence, st_losses
from runners.plan.models import pretrained
from runners.spec import RunSpec
from runners.train.callback import make_event_callback
from runners.train.common import RankInfo, configure_tracking

# Column names the trainer's collator reads as labels.
LABEL, SCORE = "label", "score"
RUNNER_ARGS = ("loss", "loss_kwargs")
# Where each loss keeps the distance functions runner_args.loss_kwargs.distance_metric names.
DISTANCES = {"TripletLoss": "TripletDistanceMetric", "ContrastiveLoss": "SiameseDistanceMetric",
             "OnlineContrastiveLoss": "SiameseDistanceMetric"}


@lru_cache(maxsize=1)
def clustering_evaluator_class() -> type:
    """Built lazily so importing this module does not import sentence-transformers."""
    from sentence_transformers.evaluation import SentenceEvaluator

    class ClusteringEvaluator(SentenceEvaluator):
        """k-means on the embeddings with as many clusters as labels; v-measure (and ARI) against the labels."""

        def __init__(self, sentences: list[str], labels: list[Any], name: str = "clustering", batch_size: int = 64,
                     seed: int = 42) -> None:
            super().__init__()
            self.sentences, self.labels, self.name = sentences, labels, name
            self.batch_size, self.seed = batch_size, seed
            self.primary_metric = "v_measure"
            self.greater_is_better = True

        def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
            from sklearn.cluster import KMeans
            from sklearn.metrics import adjusted_rand_score, completeness_score, homogeneity_score, v_measure_score

            embeddings = model.encode(self.sentences, batch_size=self.batch_size, show_progress_bar=False,
                                      convert_to_numpy=True, normalize_embeddings=True)
            k = len(set(self.labels))
            found = KMeans(n_clusters=k, n_init=10, random_state=self.seed).fit_predict(embeddings)
            metrics = {"v_measure": v_measure_score(self.labels, found),
                       "homogeneity": homogeneity_score(self.labels, found),
                       "completeness": completeness_score(self.labels, found),
                       "ari": adjusted_rand_score(self.labels, found)}
            metrics = self.prefix_name_to_metrics({k: float(v) for k, v in metrics.items()}, self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return ClusteringEvaluator


@lru_cache(maxsize=1)
def combined_evaluator_class() -> type:
    from sentence_transformers.evaluation import SequentialEvaluator

    class CombinedEvaluator(SequentialEvaluator):
        """All sub-evaluators' scores, without SequentialEvaluator's 'sequential_score' (a copy of the last
        one's); the first evaluator's primary metric stays the primary one."""

        def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
            results = super().__call__(model, output_path, epoch, steps)
            results.pop("sequential_score", None)
            self.primary_metric = self.evaluators[0].primary_metric
            return results

    return CombinedEvaluator


def labelled_triplets(texts: list[str], labels: list[Any], seed: int, limit: int = 1000) -> tuple[list[str], ...]:
    """(anchor, positive, negative) triplets from labelled texts: same label, then a different one."""
    rng = random.Random(seed)
    by_label: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    anchors, positives, negatives = [], [], []
    for i, label in enumerate(labels[:limit]):
        same = [j for j in by_label[label] if j != i]
        other = [j for j in range(len(labels)) if labels[j] != label]
        if not same or not other:
            continue
        anchors.append(texts[i])
        positives.append(texts[rng.choice(same)])
        negatives.append(texts[rng.choice(other)])
    return anchors, positives, negatives


def build_datasets(shape: str, roles: dict[str, str], train_df: Any, eval_df: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Train/eval datasets in the column layout the trainer reads (inputs in order, then label/score), plus
    facts the loss needs (label ids, number of classes)."""
    from datasets import Dataset

    r = st_losses.normalise_roles(roles)
    info: dict[str, Any] = {}

    def layout(df: Any) -> dict[str, list[Any]]:
        if shape in ("pairs", "triplets"):
            names = ("anchor", "positive", "negative") if shape == "triplets" else ("anchor", "positive")
            return {n: df[r[n]].astype(str).tolist() for n in names}
        if shape == "single":
            return {"text": df[r["text"]].astype(str).tolist(), LABEL: [info["label_ids"][v] for v in df[r["label"]]]}
        out = {"sentence1": df[r["text"]].astype(str).tolist(), "sentence2": df[r["text_pair"]].astype(str).tolist()}
        if shape == "scored_pairs":
            out[SCORE] = df[r["label"]].astype(float).tolist()
        else:
            out[LABEL] = [info["label_ids"][v] for v in df[r["label"]]]
        return out

    if shape in ("single", "labelled_pairs"):
        labels = data.label_list(train_df, eval_df, r["label"])
        info["label_ids"] = {v: i for i, v in enumerate(labels)}
        info["num_labels"] = len(labels)
        if shape == "single" and len(labels) < 2:
            raise UserError(f"Column '{r['label']}' has a single label: (text, label) training needs at least two.")
    return Dataset.from_dict(layout(train_df)), Dataset.from_dict(layout(eval_df)), info


def build_evaluator(shape: str, eval_ds: Any, seed: int, batch_size: int) -> Any:
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator, TripletEvaluator

    if shape == "single":
        texts, labels = eval_ds["text"], eval_ds[LABEL]
        anchors, positives, negatives = labelled_triplets(texts, labels, seed)
        evaluators = [clustering_evaluator_class()(texts, labels, batch_size=batch_size, seed=seed)]
        if anchors:
            evaluators.append(TripletEvaluator(anchors, positives, negatives, name="triplet", batch_size=batch_size))
        return combined_evaluator_class()(evaluators)
    if shape == "triplets":
        return TripletEvaluator(eval_ds["anchor"], eval_ds["positive"], eval_ds["negative"], name="triplet",
                                batch_size=batch_size)
    if shape == "pairs":
        if len(eval_ds) < 2:
            return None
        positives = eval_ds["positive"]
        negatives = positives[1:] + positives[:1]  # another pair's positive: the in-batch negative of the loss
        return TripletEvaluator(eval_ds["anchor"], positives, negatives, name="triplet", batch_size=batch_size)
    scores = eval_ds[SCORE] if shape == "scored_pairs" else [float(v) for v in eval_ds[LABEL]]
    return EmbeddingSimilarityEvaluator(eval_ds["sentence1"], eval_ds["sentence2"], scores, name="similarity",
                                        batch_size=batch_size, write_csv=False)


def build_loss(name: str, model: Any, info: dict[str, Any], kwargs: dict[str, Any] | None = None) -> Any:
    """The loss with runner_args.loss_kwargs (a distance_metric given by name, e.g. cosine_distance)."""
    import sentence_transformers.losses as losses  # a submodule import: 6.x serves this path by an import hook

    kwargs = dict(kwargs or {})
    metric = kwargs.get("distance_metric")
    if isinstance(metric, str):
        holder = getattr(losses, DISTANCES.get(name, "BatchHardTripletLossDistanceFunction"))
        if not hasattr(holder, metric):
            choices = [m for m in vars(holder) if not m.startswith("_")]
            raise UserError(f"runner_args.loss_kwargs.distance_metric '{metric}' is not a distance of {name}. "
                            f"Choose one of: {', '.join(choices)}.")
        kwargs["distance_metric"] = getattr(holder, metric)
    try:
        if name == "SoftmaxLoss":
            return losses.SoftmaxLoss(model, model.get_sentence_embedding_dimension(), info.get("num_labels", 2), **kwargs)
        return getattr(losses, name)(model, **kwargs)
    except TypeError as exc:
        raise UserError(f"runner_args.loss_kwargs do not fit {name}: {exc}.") from exc


def build_model(spec: RunSpec, writer: ev.EventWriter | None, use_cpu: bool) -> Any:
    """The spec's sentence-transformers model; a plain transformers model gets mean pooling; a config-only
    directory a random init."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer

    name = spec.model.name_or_path
    device = "cpu" if use_cpu else None
    max_len = spec.dataset.max_seq_length
    if pretrained(spec):  # model.init (preflight made sure the weights exist)
        model = SentenceTransformer(name, device=device)
        model.max_seq_length = max_len
        return model
    from transformers import AutoModel

    class RandomInitTransformer(Transformer):
        def _load_model(self, model_name_or_path: str, transformer_task: Any, config: Any, *args: Any, **kwargs: Any):
            return AutoModel.from_config(config)

    transformer = RandomInitTransformer(name, max_seq_length=max_len)
    transformer.__class__ = Transformer  # saves and reloads as the stock module
    if writer:
        writer.emit(ev.MESSAGE, level="warning", text=f"{name}: training from a random init (model.init: random)")
    pooling = Pooling(transformer.get_embedding_dimension(), "mean")
    return SentenceTransformer(modules=[transformer, pooling], device=device)


def training_arguments(spec: RunSpec, run_dir: Path, num_train: int, world_size: int, loss_name: str) -> dict[str, Any]:
    """SentenceTransformerTrainingArguments kwargs: the spec's values, the planned cadence, ftui's plumbing."""
    import torch

    args = cadence.training_arguments(spec, num_train, world_size)
    args.update(output_dir=str(run_dir / "output"), disable_tqdm=True, logging_first_step=True)
    args.setdefault("report_to", spec.tracking.report_to or "none")
    if spec.tracking.run_name or "wandb" in spec.tracking.report_to:
        args.setdefault("run_name", spec.tracking.run_name or spec.name)
    metric = args.get("metric_for_best_model")
    if metric and "greater_is_better" not in spec.training:
        args["greater_is_better"] = not cadence.lower_is_better(str(metric))
    batch = int(args.get("per_device_train_batch_size", 8))
    if st_losses.LOSS_SHAPES.get(loss_name) == "single" and batch >= 4 and batch % 2 == 0:
        args.setdefault("batch_sampler", "group_by_label")  # batch-hard mining needs several texts per label
    elif loss_name in ("MultipleNegativesRankingLoss", "MultipleNegativesSymmetricRankingLoss",
                       "CachedMultipleNegativesRankingLoss"):
        args.setdefault("batch_sampler", "no_duplicates")  # a duplicate in the batch is a false negative
    if world_size > 1:
        args.setdefault("ddp_find_unused_parameters", False)
        args.setdefault("average_tokens_across_devices", False)
    if not torch.cuda.is_available() or spec.hardware.strategy == "cpu":
        args.setdefault("use_cpu", True)
    return args


def train(spec: RunSpec, run_dir: Path) -> None:
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import set_seed

    run_dir = Path(run_dir)
    for key in spec.runner_args:
        if key not in RUNNER_ARGS:
            raise UserError(f"runner_args.{key} means nothing to the sentence-transformers runner."
                            f"{did_you_mean(key, RUNNER_ARGS)} It takes: {', '.join(RUNNER_ARGS)}; trainer options "
                            "go in the training section.")
    rank = RankInfo.from_env()
    seed = int(spec.training.get("seed", 42))
    set_seed(seed)
    configure_tracking(spec, run_dir)
    train_df, eval_df = data.load_splits(spec)
    roles = data.detect_columns(train_df, spec.dataset, "embedding", spec.dataset.train)
    label_col = st_losses.normalise_roles(roles).get("label")
    values = train_df[label_col].tolist() if label_col else None
    loss_name, reason = st_losses.choose_loss(roles, spec.runner_args.get("loss"), values)
    shape = st_losses.LOSS_SHAPES[loss_name]
    if shape == "pairs" and "negative" in st_losses.normalise_roles(roles):
        shape = "triplets"  # MNRL also takes (anchor, positive, negative): the negative is one more in-batch negative
    callback = make_event_callback(run_dir, spec.spec_hash(), spec.runner, spec.task, len(train_df))
    writer = callback.writer if rank.is_main else None
    if writer:
        writer.emit(ev.MESSAGE, level="info", text=f"loss {loss_name}: {reason}")
    train_ds, eval_ds, info = build_datasets(shape, roles, train_df, eval_df)
    kwargs = training_arguments(spec, run_dir, len(train_df), rank.world_size, loss_name)
    args = SentenceTransformerTrainingArguments(**kwargs)
    model = build_model(spec, writer, bool(kwargs.get("use_cpu")))
    loss = build_loss(loss_name, model, info, spec.runner_args.get("loss_kwargs"))
    evaluator = build_evaluator(shape, eval_ds, seed, int(kwargs.get("per_device_eval_batch_size", 32)))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, loss=loss,
                                         evaluator=evaluator, callbacks=[callback])
    result = trainer.train(resume_from_checkpoint=spec.training.get("resume_from_checkpoint"))
    final = run_dir / "output" / ("best_model" if args.load_best_model_at_end else "final")
    if rank.is_main and writer is not None:  # writer is None exactly off the main rank
        model.save(str(final))
        writer.emit(ev.MESSAGE, level="info", text=f"model saved to {final}"
                    + (f" (best {args.metric_for_best_model} = {trainer.state.best_metric})"
                       if args.load_best_model_at_end and trainer.state.best_metric is not None else ""))
    callback.finish(result.metrics, trainer.state.global_step)
