"""Train a speech emotion classifier with the `transformers` Trainer, on one split or every fold of a protocol.

    python train.py --corpus emodb --backbone whisper --encoder openai/whisper-base \
        --pooling attention --protocol loso --output_dir runs/emodb_whisper
    python train.py settings.json            # the same settings as a JSON file
    python train.py --dataset_name DATASET --label_column_name emotion --eval_split_name test --backbone cnn1d
                                             # a Hugging Face dataset with its own train/test splits

Each run's folder holds, per fold, the best checkpoint (save_pretrained layout with its modeling code, loadable
with `pipeline("audio-classification", model=DIR, trust_remote_code=True)`), `metrics.json`, a confusion-matrix PNG
and a training-curve PNG; with several folds, the run folder also has the summary over folds.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, Wav2Vec2FeatureExtractor, set_seed
from transformers.trainer_utils import get_last_checkpoint

import models
from audio.augment import training_dataset
from config import (PROTOCOLS, DataArguments, ModelArguments, check_settings, evaluation_settings, given_flags,
                    parse_args, resolve_embedding_norm)
from data.corpora import label_corpora, label_map, parse_merge, read_corpora, read_hf_splits, relabel
from data_process import (EmbeddingsDataset, LayersDataset, WaveCollator, WaveDataset, collate_embeddings, collate_layers,
                          load_audio, make_folds)
from data.feature_cache import cached_layers
from data.finetune_cache import (CachedTopModel, HiddenDataset, HiddenTrainer, cached_hidden, collate_hidden, frozen_slice,
                                 supports_cached_finetune, top_embeddings)
from adaptation.calibration import calibrate_folds, fit_modes, reliability_png
from audio.microphones import variant_maker
from metrics import classification_report, compute_metrics, format_summary, summarize_folds
from reports.model_card import write_model_card
from adaptation.normalization import (GROUPINGS, average_statistics, group_statistics, neutral_offset, novelty, remapped,
                                      statistics)
from reports.plots import confusion_png, curves_png

NORM_MODES = ("none", "speaker", "corpus")  # how test clips are standardised (see --normalize_test)
NO_VALIDATION = " (--val_speakers 0, --protocol all, or too few speakers)"  # why a fold has no validation set
KEPT = {  # which weights a fold keeps: (best checkpoint kept, validation set is the test set) -> metrics.json "kept"
    (True, False): "the checkpoint with the best validation score", (False, False): "the last weights",
    (True, True): "the checkpoint with the best score on the eval split, which is also the test split: the test "
                  "figures are optimistic", (False, True): "the last weights (the eval split is the test split)"}
DATASET_PROTOCOL = "dataset_splits"  # --dataset_name: its own train and eval splits
PUSH_IGNORED = ["checkpoint-*", "predictions.csv", "*.npz", "runs/*", "_*"]  # never uploaded: local paths, resume state

def build_model(margs: ModelArguments, labels: list[str], encoder: tuple[dict, dict] | None):
    """Return a fresh EmotionClassifier (pretrained encoder weights loaded) and its feature extractor."""
    backbone_cls = models.BACKBONES[margs.backbone]
    config = models.EmotionConfig(
        backbone=margs.backbone, pooling=margs.pooling, cnn_preset=margs.cnn_preset,
        cnn_first_stride=margs.cnn_first_stride, encoder_config=encoder[0] if encoder else None,
        encoder_name=margs.encoder if encoder else None, encoder_mode=margs.encoder_mode,
        trainable_layers=margs.trainable_layers, layer_mix=margs.layer_mix,
        first_layer=margs.first_layer if margs.first_layer is not None else int(encoder is not None),
        normalize_layers=margs.backbone != "cnn1d", frame_pooling=margs.frame_pooling if encoder else 1,
        projector_dim=margs.projector_dim or None, classifier_dropout=margs.classifier_dropout,
        classifier_hidden=margs.classifier_hidden, embedding_norm=resolve_embedding_norm(margs),
        n_mels=margs.n_mels or None, lstm_layers=margs.lstm_layers, lstm_hidden=margs.lstm_hidden,
        key_beta=margs.key_beta, image_model=margs.image_model, image_weights=margs.image_weights,
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    model = models.EmotionClassifier(config)
    if encoder:
        model.backbone.load_pretrained(encoder[1])
        model.backbone.set_trainable(margs.encoder_mode, margs.trainable_layers)
    if hasattr(model.backbone, "load_image_weights"):  # image CNNs: pretrained weights, or a logged random start
        model.backbone.load_image_weights(margs.image_weights)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=backbone_cls.normalize_waveform, return_attention_mask=True)
    return model, extractor


def optimizer_for(model, margs: ModelArguments, targs: TrainingArguments):
    """Return AdamW with the encoder at --encoder_learning_rate and the rest at --learning_rate, or None (the Trainer's own)."""
    if margs.encoder_learning_rate is None:
        return None
    encoder = {id(p) for p in model.backbone.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) in encoder], "lr": margs.encoder_learning_rate},
              {"params": [p for p in trainable if id(p) not in encoder], "lr": targs.learning_rate}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=targs.weight_decay,
                             betas=(targs.adam_beta1, targs.adam_beta2), eps=targs.adam_epsilon)


def class_weighted_loss(weights: torch.Tensor):
    """Return a Trainer `compute_loss_func` with inverse-frequency class weights."""
    def loss(outputs, labels, num_items_in_batch=None):
        return torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weights.to(outputs.logits.device))
    return loss


def balanced(idx: np.ndarray, rows, seed: int) -> np.ndarray:
    """Return as many training indices as `idx`, drawn so that every (corpus, emotion) pair is equally frequent."""
    cells: dict[tuple, list] = {}
    for i in idx:
        cells.setdefault((rows[i].corpus, rows[i].label), []).append(i)
    rng = np.random.default_rng(seed)
    each = int(np.ceil(len(idx) / len(cells)))
    drawn = [rng.choice(members, each, replace=len(members) < each) for members in cells.values()]
    return np.sort(np.concatenate(drawn))


def subsample(rows, max_files: int, seed: int):
    """Return `max_files` rows drawn at random (seeded), in their original order."""
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(rows))[:max_files]
    return [rows[i] for i in sorted(keep)]


def decodable(rows) -> tuple[list, list[str]]:
    """Return the rows whose audio decodes, and a message for each that does not."""
    good, skipped = [], []
    for row in rows:
        try:
            load_audio(row.path)
            good.append(row)
        except ValueError as err:
            skipped.append(str(err))
    return good, skipped


def pooled_embeddings(model, cached: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Return every clip's pooled embedding (N, F) from its cached layers: the head's input, computed once."""
    order = np.argsort([x.shape[1] for x in cached])  # similar lengths together: little padding
    out = np.zeros((len(cached), model.pool.output_dim), dtype=np.float32)
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            batch = collate_layers([{"encoder_layers": cached[i], "labels": 0} for i in chosen])
            out[chosen] = model.pool_layers(batch["encoder_layers"].to(device),
                                            batch["frame_mask"].to(device)).float().cpu().numpy()
    return out


def keep_statistics(model, embeddings: np.ndarray, rows, mean: np.ndarray, std: np.ndarray) -> None:
    """Store in the model the statistics a clip heard alone is judged with, and where calm speech sits from its
    speaker's mean (computed on the training clips' `embeddings` and `rows`)."""
    model.embedding_mean.copy_(torch.from_numpy(mean))
    model.embedding_std.copy_(torch.from_numpy(std))
    model.neutral_offset.copy_(torch.from_numpy(neutral_offset(
        embeddings, [r.speaker for r in rows], np.array([r.label == "neutral" for r in rows]), std)))


def embedding_datasets(model, embedded: np.ndarray, variants: list[np.ndarray], data, label_ids, train_idx, norm: str,
                       alone: bool = False):
    """Return make(idx, mode) -> EmbeddingsDataset and make_train(idx) (clean clips and their --augment_variants).

    With --embedding_norm, training clips are standardised with their own group's statistics (corpus or speaker;
    each augmented variant set of a group is a group of its own, like another recording setup), and the model keeps
    the clean training groups' average for a clip heard alone (with `alone`, the clean clips are also trained
    standardised that way, so that one model serves single clips and groups). Evaluation clips are standardised with the statistics
    of their group in the evaluated set (mode corpus or speaker), or alone (mode none: the model's statistics).
    """
    grouped = {mode: GROUPINGS[mode](data) for mode in GROUPINGS}  # speakers never cross folds: computed once
    if model.normalizes:
        groups = np.array(grouped[norm])
        mean, std = average_statistics(embedded[train_idx], groups[train_idx])
        keep_statistics(model, embedded[train_idx], [data[i] for i in train_idx], mean, std)

    def make(idx, mode: str = norm, sets: tuple = (("", embedded),)):
        vectors = np.concatenate([e[idx] for _, e in sets])
        ids = np.tile(label_ids[idx], len(sets))
        if not model.normalizes or mode == "none":
            return EmbeddingsDataset(vectors, ids)
        groups = [grouped[mode][i] + tag for tag, _ in sets for i in idx]
        return EmbeddingsDataset(vectors, ids, *group_statistics(vectors, groups))

    def make_train(idx):
        dataset = make(idx, norm, (("", embedded), *((f"~{k}", v) for k, v in enumerate(variants))))
        if model.normalizes and alone:  # the clean clips once more, standardised as a clip heard alone is
            n = len(idx)
            mean, std = model.embedding_mean.numpy(), model.embedding_std.numpy()
            dataset = EmbeddingsDataset(np.concatenate([dataset.embeddings, embedded[idx]]),
                                        np.concatenate([dataset.label_ids, label_ids[idx]]),
                                        np.concatenate([dataset.mean, np.broadcast_to(mean, (n, len(mean)))]),
                                        np.concatenate([dataset.std, np.broadcast_to(std, (n, len(std)))]))
        return dataset
    return make, make_train


def run_fold(fold_dir: Path, fold: dict, data, dargs, margs, targs, labels, encoder, cached, embedded=None,
             variants=(), given: dict | None = None, hidden: tuple | None = None) -> dict:
    """Train one fold, save its best checkpoint and figures in `fold_dir`, and return its test report.

    hidden: (inputs, variants' inputs) of the first trainable layer, cached (finetune_cache.py): only the top layers
    and the head run each step, on those inputs and the cached frozen layers (`cached`).
    """
    if (fold_dir / "metrics.json").exists():  # finished before an interruption
        print(f"{fold_dir}: already done, kept")
        return json.loads((fold_dir / "metrics.json").read_text())["test"]
    fold_start = time.time()
    set_seed(targs.seed)
    model, extractor = build_model(margs, labels, encoder)
    label_ids = np.array([labels.index(r.label) for r in data])
    head_cache = cached if margs.encoder_mode != "frozen" else None  # --head_epochs: the head first, on the cache
    cached = None if head_cache is not None else cached
    has_val, val_is_test = len(fold["val"]) > 0, fold.get("val_is_test", False)
    args = dataclasses.replace(  # the Trainer never pushes: main pushes the final checkpoint with its card
        targs, output_dir=str(fold_dir), remove_unused_columns=False, push_to_hub=False,
        **evaluation_settings(targs, given or {}, has_val, val_is_test, NO_VALIDATION))
    if args.load_best_model_at_end and val_is_test:
        print(f"warning: {KEPT[True, True]} (--load_best_model_at_end true)")
    if embedded is not None and "save_strategy" not in (given or {}) and not args.load_best_model_at_end:
        # a head on embeddings trains in seconds: resume checkpoints (the whole encoder each time) would cost more
        args = dataclasses.replace(args, save_strategy="no")
    if embedded is not None:  # a parameter-free path to the pooled embedding: the head trains on embeddings
        make, make_train = embedding_datasets(model, embedded, variants, data, label_ids, fold["train"],
                                              margs.embedding_norm, margs.train_alone)
        collator = collate_embeddings
    elif hidden is not None:  # the top encoder layers fine-tuned on their cached inputs
        heard = frozen_slice(model)  # the frozen layers the head reads, from the feature cache
        inputs, input_variants = hidden
        make = lambda idx: HiddenDataset([inputs[i] for i in idx], [head_cache[i][heard] for i in idx],  # noqa: E731
                                         label_ids[idx])
        make_train = lambda idx: HiddenDataset(  # noqa: E731
            [x[i] for x in (inputs, *input_variants) for i in idx],
            [x[i][heard] for x in (head_cache, *variants) for i in idx], np.tile(label_ids[idx], 1 + len(variants)))
        collator = collate_hidden
    elif cached is not None:
        last_only = margs.layer_mix == "last" and not model.config.first_layer
        keep = slice(-1, None) if last_only else slice(None)  # only the layers the head reads
        make = lambda idx: LayersDataset([cached[i][keep] for i in idx], label_ids[idx])  # noqa: E731
        make_train = lambda idx: LayersDataset([x[i][keep] for x in (cached, *variants) for i in idx],  # noqa: E731
                                               np.tile(label_ids[idx], 1 + len(variants)))
        collator = collate_layers
    else:
        paths = np.array([r.path for r in data])
        make = lambda idx, crop=None: WaveDataset(paths[idx], label_ids[idx], crop, seed=targs.seed)  # noqa: E731
        collator = WaveCollator(extractor)
    from_audio = cached is None and embedded is None and hidden is None
    train_idx = balanced(fold["train"], data, targs.seed) if dargs.balanced_sampling else fold["train"]
    train_ds = make(train_idx, dargs.crop_seconds) if from_audio else make_train(train_idx)
    if from_audio:  # --augment, and silence trimming before the crop for backbones that trim
        train_ds = training_dataset(train_ds, dargs.augment, getattr(model.backbone, "trim_db", None))
    counts = np.bincount(label_ids[fold["train"]], minlength=len(labels))
    weights = torch.tensor(len(fold["train"]) / (len(labels) * np.maximum(counts, 1)), dtype=torch.float32)
    loss = class_weighted_loss(weights) if margs.class_weighted else None
    resume = get_last_checkpoint(str(fold_dir)) if fold_dir.exists() else None
    if head_cache is not None and margs.head_epochs and resume is None:  # a resumed run's checkpoint already holds the fitted head
        fit_head(model, head_cache, fold["train"], label_ids, margs, targs, fold_dir, loss)
    trainer = (HiddenTrainer if hidden is not None else Trainer)(
        model=CachedTopModel(model) if hidden is not None else model, args=args, data_collator=collator, train_dataset=train_ds,
        eval_dataset=make(fold["val"]) if has_val else None, processing_class=extractor,
        compute_metrics=partial(compute_metrics, labels=labels), compute_loss_func=loss,
        callbacks=[EarlyStoppingCallback(margs.patience)] if args.load_best_model_at_end else [],
        optimizers=(optimizer_for(model, margs, args), None))
    start = time.time()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - start
    # predict is collective under DDP: every process takes part, only the first writes
    modes = NORM_MODES if embedded is not None and model.normalizes else ()
    test = fold["test"]
    by_mode = {mode: trainer.predict(make(test, mode)).predictions for mode in modes if len(test)}
    novelties = {mode: novelty_of(make(test, mode), model) for mode in modes if len(test)}
    if margs.encoder_mode == "finetune" and len(test):  # the fine-tuned encoder's own statistics: the adapted modes
        embed = (lambda idx: top_embeddings(model, make(idx))) if hidden is not None else \
            (lambda idx: audio_embeddings(model, make(idx), collator))
        by_mode, novelties = finetuned_modes(model, embed, fold["train"], test, data)
        modes = tuple(by_mode)
    if model.config.embedding_norm == "posthoc":  # the training statistics kept, then both modes through classify
        by_mode, novelties = posthoc_modes(model, lambda idx: pooled_embeddings(model, [cached[i] for i in idx]),
                                           fold["train"], test, data)
        modes = tuple(by_mode)
    logits = by_mode.get(dargs.normalize_test) if modes else trainer.predict(make(test)).predictions if len(test) else None
    if not trainer.is_world_process_zero():
        return {}
    report = None
    if logits is not None:
        report = classification_report(label_ids[fold["test"]], logits.argmax(-1), labels)
        if modes:  # the test clips standardised alone, per speaker and per corpus
            report["normalization"] = {mode: {k: v for k, v in classification_report(
                label_ids[test], by_mode[mode].argmax(-1), labels).items() if k in ("ua", "wa", "macro_f1")}
                for mode in modes}
            report["normalize_test"] = dargs.normalize_test
        report["test_speakers"] = sorted({data[i].speaker for i in fold["test"]})
        report["test_corpora"] = sorted({data[i].corpus for i in fold["test"]})
        write_predictions(fold_dir / "predictions.csv", [data[i] for i in fold["test"]], logits, labels)
        np.savez(fold_dir / "test_logits.npz", logits=logits, labels=label_ids[test],  # for the calibration over folds
                 **{f"logits_{m}": v for m, v in by_mode.items()}, **{f"novelty_{m}": v for m, v in novelties.items()})
        confusion_png(report["confusion"], labels, fold_dir / "confusion.png",
                      f"{fold_dir.name}: UA {report['ua']:.3f} WA {report['wa']:.3f}")
    save_checkpoint(trainer, fold_dir, margs.save_fp16, model)  # the full model, which runs from audio
    curves_png(trainer.state.log_history, fold_dir / "training_curve.png")
    best_key = f"eval_{(args.metric_for_best_model or '').removeprefix('eval_')}"
    best_epoch = next((h["epoch"] for h in trainer.state.log_history
                       if h.get(best_key) == trainer.state.best_metric), None) if args.load_best_model_at_end else None
    (fold_dir / "metrics.json").write_text(json.dumps({
        "test": report, "train_seconds": seconds, "best_validation_ua": trainer.state.best_metric,
        "best_epoch": best_epoch, "epochs_run": trainer.state.epoch, "fold_seconds": time.time() - fold_start,
        "finetune_from_cache": hidden is not None,
        "kept": KEPT[args.load_best_model_at_end, val_is_test],
        "sizes": {k: int(len(v)) for k, v in fold.items() if isinstance(v, np.ndarray)}}, indent=1))
    for stale in fold_dir.glob("checkpoint-*"):  # the best weights are saved above; resume state is no longer needed
        shutil.rmtree(stale, ignore_errors=True)
    return report


def finetuned_modes(model, embed, train_idx, test_idx, data) -> tuple[dict, dict]:
    """Return the test logits and novelty per mode of a model fine-tuned without standardisation: alone as trained,
    adapted with each group's statistics put back on the training set's scale (normalization.remapped).
    `embed(indices)`: the clips' pooled embeddings (N, F) from the fine-tuned encoder."""
    train, test = embed(train_idx), embed(test_idx)
    mean, std = statistics(train)
    rows = [data[i] for i in test_idx]
    by_mode, novelties = {}, {}
    device = next(model.parameters()).device
    for mode in NORM_MODES:
        vectors = test if mode == "none" else remapped(test, GROUPINGS[mode](rows), mean, std)
        with torch.no_grad():
            by_mode[mode] = model.eval()(embeddings=torch.from_numpy(vectors).to(device)).logits.float().cpu().numpy()
        novelties[mode] = novelty(vectors, mean, std)
    return by_mode, novelties


def posthoc_modes(model, embed, train_idx, test_idx, data) -> tuple[dict, dict]:
    """--embedding_norm posthoc: keep the training clips' embedding statistics in the model (and where calm speech
    sits, for a user's calm clips), then return the test logits and novelty per mode through the model's own
    `classify`, as the app and infer.py judge: alone, or each group standardised with its own statistics and put back
    on the training scale. `embed(indices)`: the clips' pooled embeddings (N, F)."""
    was_training = model.training
    model.eval()
    train = embed(train_idx)
    mean, std = statistics(train)
    keep_statistics(model, train, [data[i] for i in train_idx], mean, std)
    by_mode, novelties = {}, {}
    if len(test_idx):
        test, rows = embed(test_idx), [data[i] for i in test_idx]
        device = next(model.parameters()).device
        for mode in NORM_MODES:
            stats = group_statistics(test, GROUPINGS[mode](rows)) if mode != "none" else (None, None)
            group_mean, group_std = (torch.from_numpy(x).to(device) if x is not None else None for x in stats)
            with torch.no_grad():
                by_mode[mode] = model(embeddings=torch.from_numpy(test).to(device), embedding_mean=group_mean,
                                      embedding_std=group_std).logits.float().cpu().numpy()
            novelties[mode] = novelty(test, mean, std)  # of the clip itself, as `temperature` measures it
    model.train(was_training)
    return by_mode, novelties


def audio_embeddings(model, dataset: WaveDataset, collator: WaveCollator, batch_size: int = 16) -> np.ndarray:
    """Return every clip's pooled embedding (N, F) from the (fine-tuned) encoder run on its whole audio, in the
    dataset's order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collator([{"audio": dataset[i]["audio"]} for i in range(start, min(start + batch_size, len(dataset)))])
            out.append(model.embed(batch["input_values"].to(device), batch["attention_mask"].to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def novelty_of(dataset: EmbeddingsDataset, model) -> np.ndarray:
    """Return how far each clip of a dataset sits from the training data (the model's statistics), in any mode."""
    return novelty(dataset.embeddings, model.embedding_mean.numpy(), model.embedding_std.numpy())


def fit_head(model, cached, train_idx, label_ids, margs, targs, fold_dir: Path, loss=None) -> None:
    """Train only the head for --head_epochs on cached frozen-encoder layers (on their pooled embeddings, computed
    once, where the path to them has no learned weights), then make the encoder trainable again."""
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    if any(p.requires_grad for part in (model.layer_mix, model.projector, model.pool) for p in part.parameters()):
        train_ds, collator = LayersDataset([cached[i] for i in train_idx], label_ids[train_idx]), collate_layers
    else:  # the same head, trained on what it reads: seconds instead of minutes
        train_ds = EmbeddingsDataset(pooled_embeddings(model, [cached[i] for i in train_idx]), label_ids[train_idx])
        collator = collate_embeddings
    args = dataclasses.replace(targs, output_dir=str(fold_dir), num_train_epochs=margs.head_epochs,
                               eval_strategy="no", save_strategy="no", remove_unused_columns=False,
                               train_sampling_strategy="random")  # lengths mean nothing to pooled embeddings
    Trainer(model=model, args=args, data_collator=collator, train_dataset=train_ds, compute_loss_func=loss,
            optimizers=(optimizer_for(model, margs, args), None)).train()
    model.backbone.set_trainable(margs.encoder_mode, margs.trainable_layers)


def write_predictions(path: Path, rows, logits: np.ndarray, labels: list[str]) -> None:
    """Write each test clip's path, speaker, corpus, true and predicted label and probabilities."""
    probs = torch.softmax(torch.as_tensor(logits), dim=-1).numpy()
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "speaker", "corpus", "label", "predicted", *labels])
        for row, p in zip(rows, probs):
            writer.writerow([row.path, row.speaker, row.corpus, row.label, labels[int(p.argmax())], *np.round(p, 5)])


def by_corpus(fold_dirs: list[Path], labels: list[str]) -> dict:
    """Return WA, UA and macro-F1 per corpus, pooled over the folds' predictions.csv files."""
    pairs = {}
    for folder in fold_dirs:
        for row in csv.DictReader(open(folder / "predictions.csv")):
            pairs.setdefault(row["corpus"], []).append((labels.index(row["label"]), labels.index(row["predicted"])))
    reports = {corpus: classification_report(*zip(*p), labels) for corpus, p in pairs.items()}
    return {corpus: {k: r[k] for k in ("ua", "wa", "macro_f1", "n")} for corpus, r in reports.items()}


def calibrate_run(out: Path, fold_dirs: list[Path], names: list[str]) -> dict:
    """Fit the temperature on the folds' held-out logits, check it fold by fold, draw reliability diagrams."""
    data = {d.name: np.load(d / "test_logits.npz") for d in fold_dirs}
    result = calibrate_folds({k: v["logits"] for k, v in data.items()}, {k: v["labels"] for k, v in data.items()})
    for (key, fold), name in zip(result["folds"].items(), names):
        fold["name"] = name
        reliability_png(fold, out / f"reliability_{key}.png", f"{key} ({name[:40]}): temperature from the other folds")
    print(f"calibration: temperature {result['temperature']:.2f}, ECE {result['ece_before']:.3f} -> "
          f"{result['ece_after']:.3f} over all folds; per fold (T fit on the others): "
          + ", ".join(f"{f['name'][:12]} {f['ece_before']:.3f}->{f['ece_after']:.3f}" for f in result["folds"].values()))
    return result


def held_out_folds(metrics_files: list[str]) -> list:
    """Return the held-out logits of every fold of the runs whose metrics.json are given, where they hold every
    test mode (runs of models that standardise); an empty list if any does not."""
    files = [f for m in metrics_files for f in sorted(Path(m).parent.glob("fold_*/test_logits.npz"))]
    folds = [dict(np.load(f)) for f in files]
    return folds if folds and all("logits_speaker" in f for f in folds) else []


def apply_calibration(folder: Path, calibration: dict) -> None:
    """Store the held-out calibration (per mode, or one temperature) and unsure threshold in a checkpoint's config."""
    config = models.EmotionConfig.from_pretrained(folder)
    if "by_mode" in calibration:
        config.calibration = {mode: {k: fit[k] for k in ("intercept", "slope", "unsure_below")}
                              for mode, fit in calibration["by_mode"].items()}
        config.calibration_temperature = math.exp(config.calibration["alone"]["intercept"])
        config.unsure_below = config.calibration["alone"]["unsure_below"]
    else:
        config.calibration_temperature = calibration["temperature"]
        config.unsure_below = calibration["unsure_below"]
    config.save_pretrained(folder)


def save_checkpoint(trainer: Trainer, folder: Path, fp16: bool, model=None) -> None:
    """Save the trained model (default the Trainer's; optionally as float16 weights that load back as float32) and its
    extractor."""
    model = trainer.model if model is None else model
    trained = model
    if fp16:
        model = model.to(torch.float16)
    model.save_pretrained(folder)
    trainer.processing_class.save_pretrained(folder)
    if fp16:  # the weights are stored in half precision; computing stays in float32 on load
        config = json.loads((folder / "config.json").read_text())
        config["dtype"] = "float32"
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        trained.to(torch.float32)


def label_sources(dargs: DataArguments, rows: list) -> dict:
    """Return which corpora carry each label of the run ("kept") and each label --labels left out ("left_out"),
    {label: {corpus: clips}}, for the model card."""
    kept = label_corpora(rows)
    if not dargs.labels or dargs.dataset_name:
        return {"kept": kept, "left_out": {}}
    every = read_corpora(dargs.corpus, merge=parse_merge(dargs.merge) if dargs.merge else None)
    return {"kept": kept, "left_out": label_corpora([r for r in every if r.label not in kept])}


def read_data(dargs: DataArguments, seed: int) -> tuple[list, set[int] | None]:
    """Return the utterances to train and test on (after --labels, --merge, --max_files), and the id() of each
    utterance of --dataset_name's eval split (None for --corpus data, which --protocol splits)."""
    merge = parse_merge(dargs.merge) if dargs.merge else None
    if not dargs.dataset_name:
        rows = read_corpora(dargs.corpus, keep=dargs.labels, merge=merge)
        return (subsample(rows, dargs.max_files, seed) if dargs.max_files else rows), None
    names = (dargs.train_split_name, dargs.eval_split_name)
    if names[0] == names[1]:
        raise ValueError(f"--train_split_name and --eval_split_name are both {names[0]!r}: the test would be on the "
                         "training clips")
    try:
        splits = read_hf_splits(dargs.dataset_name, names, audio=dargs.audio_column_name,
                                label=dargs.label_column_name, speaker=dargs.speaker_column_name,
                                config=dargs.dataset_config_name)
    except ValueError as err:
        hint = " (choose them with --train_split_name, --eval_split_name)" if "no split" in str(err) else ""
        raise ValueError(f"{err}{hint}") from None
    table = label_map({row.label for rows in splits.values() for row in rows}, dargs.labels, merge)
    train, test = (relabel(splits[name], table) for name in names)
    if dargs.max_files:  # drawn from both splits together
        tested = {id(row) for row in test}
        drawn = subsample(train + test, dargs.max_files, seed)
        train, test = [r for r in drawn if id(r) not in tested], [r for r in drawn if id(r) in tested]
    for name, rows in zip(names, (train, test)):
        if not rows:
            raise ValueError(f"{dargs.dataset_name}: split {name!r} has no utterance with the labels {sorted(table)}")
    unseen = sorted({r.label for r in test} - {r.label for r in train})
    if unseen:
        print(f"warning: label(s) {unseen} of split {names[1]!r} never occur in split {names[0]!r}")
    return train + test, {id(row) for row in test}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    dargs, margs, targs = parse_args(argv)
    given = given_flags(argv)
    if dargs.protocol not in PROTOCOLS:
        raise ValueError(f"--protocol {dargs.protocol!r} is not one of {PROTOCOLS}")
    if margs.backbone not in models.BACKBONES:
        raise ValueError(f"--backbone {margs.backbone!r} is not one of {sorted(models.BACKBONES)}")
    margs.embedding_norm = resolve_embedding_norm(margs)  # auto: standardise where the recipe allows it
    single_fold = dargs.dataset_name or dargs.protocol in ("all", "fixed", "random")
    check_settings(dargs, targs, given, 1 if single_fold else None)
    has_val = bool(dargs.dataset_name) or dargs.protocol in ("random", "random_kfold") or (
        dargs.protocol != "all" and dargs.val_speakers > 0)
    evaluation_settings(targs, given, has_val, bool(dargs.dataset_name), NO_VALIDATION)  # refused before any work
    out = Path(targs.output_dir)
    rows, tested = read_data(dargs, targs.seed)
    if dargs.dataset_name:  # what the settings, metrics and model card record
        config = f":config={dargs.dataset_config_name}" if dargs.dataset_config_name else ""
        dargs.corpus, dargs.protocol = [f"hf={dargs.dataset_name}{config}"], DATASET_PROTOCOL
    labels = sorted({r.label for r in rows})
    is_encoder = hasattr(models.BACKBONES[margs.backbone], "load_encoder")  # a pretrained encoder, not from scratch
    if margs.head_epochs and (not is_encoder or margs.encoder_mode == "frozen"):
        raise ValueError("--head_epochs fits the head before fine-tuning a pretrained encoder: it needs --encoder_mode "
                         f"finetune or freeze_feature_encoder, not {margs.encoder_mode!r} with backbone {margs.backbone!r}")
    encoder = models.BACKBONES[margs.backbone].load_encoder(margs.encoder) if is_encoder else None
    print(f"{len(rows)} utterances, {len({r.speaker for r in rows})} speakers, labels {labels}")

    cached, embedded, variants, skipped, hidden = None, None, [], [], None
    top_cached = (is_encoder and margs.encoder_mode == "finetune" and margs.finetune_from_cache
                  and supports_cached_finetune(build_model(margs, labels, encoder)[0]))
    if dargs.augment_variants and not (is_encoder and margs.encoder_mode == "frozen") and not top_cached:
        raise ValueError("--augment_variants caches augmented encoder outputs: it needs a pretrained encoder with "
                         "--encoder_mode frozen, or the top layers fine-tuned from the cache (from raw audio, use "
                         "--augment)")
    if top_cached and (dargs.augment or "crop_seconds" in given):
        print("note: --augment and --crop_seconds act on audio: fine-tuning from cached inputs ignores them "
              "(--augment_variants caches augmented clips; --finetune_from_cache false trains from audio)")
    if is_encoder and (margs.encoder_mode == "frozen" or margs.head_epochs or top_cached):
        model, extractor = build_model(margs, labels, encoder)
        with targs.main_process_first(desc="encoder cache"):
            layers, skipped = cached_layers(model, extractor, [r.path for r in rows], dargs.cache_dir)
        if top_cached:  # the input of the first trainable layer, raw, full frame rate (finetune_cache.py)
            with targs.main_process_first(desc="encoder hidden-state cache"):
                inputs = cached_hidden(model, extractor, [r.path for r in rows], cache_dir=dargs.cache_dir)[0]
            inputs = [x for x, y in zip(inputs, layers) if y is not None]
        rows, cached = [r for r, x in zip(rows, layers) if x is not None], [x for x in layers if x is not None]
        with targs.main_process_first(desc="augmented variants"):  # each variant k of every clip, cached once
            variants = [cached_layers(model, extractor, [r.path for r in rows], dargs.cache_dir,
                                      variant=variant_maker(rows, k))[0] for k in range(dargs.augment_variants)]
            if top_cached:
                hidden = (inputs, [cached_hidden(model, extractor, [r.path for r in rows], cache_dir=dargs.cache_dir,
                                                 variant=variant_maker(rows, k))[0]
                                   for k in range(dargs.augment_variants)])
        if margs.encoder_mode == "frozen" and not any(p.requires_grad for part in (model.layer_mix, model.projector, model.pool)
                                                      for p in part.parameters()):  # only the classifier learns:
            embedded, cached = pooled_embeddings(model, cached), None  # train it on pooled embeddings, computed once
            variants = [pooled_embeddings(model, v) for v in variants]
    else:
        rows, skipped = decodable(rows)
    for message in skipped:
        print(f"skipped: {message}")

    if dargs.protocol == "all":
        every = np.arange(len(rows))
        folds = [{"train": every, "val": every[:0], "test": every[:0]}]
    elif tested is not None:  # the dataset's eval split: evaluated during training and tested after it
        every, is_test = np.arange(len(rows)), np.array([id(r) in tested for r in rows])
        folds = [{"train": every[~is_test], "val": every[is_test], "test": every[is_test], "val_is_test": True,
                  "name": f"split {dargs.eval_split_name} (trained on split {dargs.train_split_name})"}]
    else:
        folds = make_folds([r.label for r in rows], [r.speaker for r in rows], dargs.protocol, k=dargs.folds,
                           sessions=[r.session for r in rows], test_speakers=dargs.test_speakers,
                           val_speakers=dargs.val_speakers, seed=targs.seed)
    chosen = range(len(folds)) if dargs.run_folds == "all" else [int(i) for i in dargs.run_folds.split(",")]
    single = len(folds) == 1
    out.mkdir(parents=True, exist_ok=True)
    settings = {"data": dataclasses.asdict(dargs), "model": dataclasses.asdict(margs), "training": targs.to_dict()}
    (out / "settings.json").write_text(json.dumps(settings, indent=1, default=str))

    start, reports = time.time(), []
    fold_dirs = [out if single else out / f"fold_{i:02d}" for i in chosen]
    for i, fold_dir in zip(chosen, fold_dirs):
        report = run_fold(fold_dir, folds[i], rows, dargs, margs, targs, labels, encoder, cached, embedded, variants,
                          given, hidden)
        if report:
            reports.append(report)
            print(f"fold {i} ({folds[i].get('name', 'all')[:60]}): UA {report['ua']:.3f} WA {report['wa']:.3f}")
    if not targs.should_save:  # other DDP ranks stop here
        return {}
    result = {"labels": labels, "corpora": dargs.corpus, "protocol": dargs.protocol, "n_utterances": len(rows),
              "n_speakers": len({r.speaker for r in rows}), "skipped": skipped, "wall_seconds": time.time() - start,
              "folds": reports, "label_sources": label_sources(dargs, rows)}
    if reports:
        result["by_corpus"] = by_corpus(fold_dirs, labels)
        result["summary"] = summarize_folds(reports)
        print(f"{dargs.protocol} over {len(reports)} fold(s): {format_summary(result['summary'])}")
        confusion_png(result["summary"]["pooled"]["confusion"], labels, out / "confusion.png",
                      f"{dargs.protocol}, pooled over folds: UA {result['summary']['pooled']['ua']:.3f}")
    if len(reports) > 1:  # held-out logits of every fold: fit the temperature a final model ships with
        result["calibration"] = calibrate_run(out, fold_dirs, [folds[i].get("name", "") for i in chosen])
    for fold_dir, report in zip(fold_dirs if not single else [], reports):  # each fold's checkpoint describes itself
        write_model_card(fold_dir, settings, {**result, "test": report, "summary": None, "protocol": dargs.protocol})
    if margs.cv_metrics:
        result["cross_validation"] = json.loads(Path(margs.cv_metrics).read_text())
    if margs.loco_metrics:
        result["leave_one_corpus_out"] = json.loads(Path(margs.loco_metrics).read_text())
    if margs.users_metrics:
        result["simulated_users"] = json.loads(Path(margs.users_metrics).read_text())
    quoted = result.get("leave_one_corpus_out") or result.get("cross_validation") or {}
    held_out = held_out_folds([m for m in (margs.loco_metrics, margs.cv_metrics) if m])
    if single and held_out and margs.embedding_norm != "none":  # per mode, on unseen corpora and speakers together
        result["calibration_by_mode"] = fit_modes(held_out, margs.calibration)
        apply_calibration(out, {"by_mode": result["calibration_by_mode"]})
    elif single and "calibration" in quoted:  # the held-out temperature: unseen corpora's if given, else the CV's
        apply_calibration(out, quoted["calibration"])
    if single:  # the run folder is the checkpoint: one metrics.json with the fold's details and the run's
        result = {**json.loads((out / "metrics.json").read_text()), **result}
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    if single:
        write_model_card(out, settings, result)
    if targs.push_to_hub:
        result["pushed_to"] = push_checkpoint(out, targs)
    return result


def push_checkpoint(folder: Path, targs: TrainingArguments) -> str:
    """Upload a final checkpoint folder to the Hub (--hub_model_id, else the folder's name; --hub_token,
    --hub_private_repo, --hub_revision): weights, config.json with auto_map, the modeling code, the model card, the
    metrics and figures; never PUSH_IGNORED (resume state, test predictions with local paths). Return the repo URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=targs.hub_token)
    repo = api.create_repo(targs.hub_model_id or folder.absolute().name, private=targs.hub_private_repo, exist_ok=True)
    api.upload_folder(repo_id=repo.repo_id, folder_path=folder, revision=targs.hub_revision,
                      commit_message="Upload the trained checkpoint with its code and model card",
                      ignore_patterns=PUSH_IGNORED)
    print(f"pushed {folder} to {repo}")
    return str(repo)


DISTRIBUTED_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_SIZE")


def accelerate_cpu_processes(environ=os.environ) -> int:
    """Return the --num_processes of an `accelerate launch --cpu` that started this process alone, else 1.

    On CPU, accelerate starts several processes only through mpirun (--mpirun_hostfile); otherwise it starts the
    script once, with MASTER_ADDR set but no rank, and the number asked for is only on its own command line.
    """
    if (environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true") or "MASTER_ADDR" not in environ
            or any(name in environ for name in DISTRIBUTED_ENV)):
        return 1
    import psutil
    from accelerate.commands.launch import launch_command_parser

    command = psutil.Process().parent().cmdline()
    start = next((i + 1 for i, word in enumerate(command) if word == "launch" or word.endswith("commands.launch")),
                 None)
    if start is None:
        return 1
    launch, _ = launch_command_parser().parse_known_args(command[start:])
    return (launch.num_processes or 1) if (launch.num_machines or 1) == 1 else 1


def relaunch(processes: int) -> None:
    """Run this script in `processes` CPU processes (DDP over gloo) with torch.distributed.run, as torchrun does."""
    from torch.distributed.run import main as torchrun

    print(f"accelerate launch --cpu started one process for {processes}: starting {processes} with "
          "torch.distributed.run (DDP over gloo)", flush=True)
    torchrun(["--nproc_per_node", str(processes), "--master_addr", os.environ["MASTER_ADDR"],
              "--master_port", os.environ.get("MASTER_PORT", "29500"), sys.argv[0], *sys.argv[1:]])


if __name__ == "__main__":
    processes = accelerate_cpu_processes()
    if processes > 1:
        relaunch(processes)
    else:
        main()
