#!/usr/bin/env python3
"""Trains the pump analyzer's fault classifier and exports it to ONNX.

Follows the SageMaker training "script mode" contract, so the same file runs as a SageMaker
training job and on a laptop:

- input channels: ``--train`` / ``--validation`` default to ``SM_CHANNEL_TRAIN`` /
  ``SM_CHANNEL_VALIDATION`` (``/opt/ml/input/data/<channel>``); every ``*.csv`` file in a
  channel is read. An optional ``manifest`` channel (``SM_CHANNEL_MANIFEST``) or ``--manifest``
  holds the dataset's ``manifest.json``;
- the model goes to ``--model-dir`` (default ``SM_MODEL_DIR``, ``/opt/ml/model``);
- extra outputs (the training report) go to ``--output-data-dir`` (default
  ``SM_OUTPUT_DATA_DIR``, ``/opt/ml/output/data``), when set;
- hyperparameters arrive as command-line arguments and in ``SM_HPS`` (JSON); the command line
  wins. Names are accepted with ``_`` or ``-``.

Locally::

    python train.py --train DATA/train --validation DATA/validation --model-dir OUT

The data are the CSV files of ``device-sim dataset`` (schema in the project's ``docs/ml.md``):
``run_id,t_s,label`` then the analyzer's feature vector in ``Features::names()`` order.

Writes to the model directory:

- ``model.onnx``: float32 input ``features`` ``[N, n_features]`` (the raw feature vector, no
  scaling: trees split on thresholds, so scaling would change nothing but the rounding); outputs
  ``label`` (int64 ``[N]``, an index into the model card's classes) and ``probabilities``
  (float32 ``[N, n_classes]``). Only ONNX-ML ``TreeEnsembleClassifier`` (opset ``ai.onnx.ml``
  3), ``Sum`` and ``ArgMax``, no ZipMap, so tract-onnx runs it. A random forest is laid out as
  several ensembles of ``trees_per_node`` trees each, summed (see ``layout_for_tract``);
- ``model-card.json``: version, the training data's digest, hyperparameters, input and output
  schema, validation metrics;
- ``test-vectors.json``: validation rows with onnxruntime's outputs, for parity checks of other
  runtimes.

Exit codes: 0 on success, 2 for bad arguments or bad input data (the message says what to fix).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

META_COLUMNS = ("run_id", "t_s", "label")
NORMAL = "normal"
MODEL_NAME = "pump-fault-classifier"
CARD_FORMAT_VERSION = 1
INPUT_NAME = "features"
OUTPUT_LABEL = "label"
OUTPUT_PROBABILITIES = "probabilities"
# tract-onnx implements TreeEnsembleClassifier from ai.onnx.ml opset 3 (not the opset-5
# TreeEnsemble); Identity is a no-op some converters add.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
ALLOWED_OPS = {"TreeEnsembleClassifier", "Identity", "Sum", "ArgMax"}
PARITY_TOLERANCE = 1e-5

HYPERPARAMETERS: dict[str, tuple[type, Any, str]] = {
    "estimator": (str, "random_forest", "random_forest or gradient_boosting"),
    "n_estimators": (int, 150, "trees (random_forest) or boosting stages (gradient_boosting)"),
    "max_depth": (int, 14, "maximum tree depth (0: unlimited)"),
    "min_samples_leaf": (int, 2, "minimum rows per leaf"),
    "learning_rate": (float, 0.1, "gradient_boosting only"),
    "class_weight": (str, "balanced", "balanced or none"),
    "seed": (int, 1, "random seed of the estimator"),
    "model_version": (str, "0.1.0", "the model's version, recorded in the model card"),
    "test_vectors_per_class": (int, 8, "validation rows per class in test-vectors.json"),
    "trees_per_node": (int, 2, "random_forest: trees per TreeEnsembleClassifier node (0: one node for all)"),
}


class InputError(Exception):
    """Bad arguments or bad data: the caller fixes the input."""


@dataclass
class Split:
    """One channel's rows."""

    files: list[dict[str, Any]]
    features: list[str]
    x: np.ndarray
    labels: list[str]
    run_ids: np.ndarray
    t_s: np.ndarray
    where: list[str]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def training_digest(files: list[tuple[str, str]]) -> str:
    """SHA-256 of the lines ``"{channel}/{file} {sha256}\\n"``, sorted: the generator's rule."""
    text = "".join(sorted(f"{path} {digest}\n" for path, digest in files))
    return hashlib.sha256(text.encode()).hexdigest()


def parse_args(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train the pump fault classifier (SageMaker script mode or local).",
        argument_default=None,
    )

    def both(name: str) -> list[str]:
        dashed = "--" + name.replace("_", "-")
        under = "--" + name
        return [dashed] if dashed == under else [dashed, under]

    parser.add_argument(*both("train"), default=env.get("SM_CHANNEL_TRAIN"), help="train channel directory")
    parser.add_argument(*both("validation"), default=env.get("SM_CHANNEL_VALIDATION"), help="validation channel")
    parser.add_argument(*both("model_dir"), default=env.get("SM_MODEL_DIR"), help="where the model goes")
    parser.add_argument(*both("output_data_dir"), default=env.get("SM_OUTPUT_DATA_DIR"), help="extra outputs")
    parser.add_argument(
        *both("manifest"),
        default=env.get("SM_CHANNEL_MANIFEST"),
        help="the dataset's manifest.json, or a directory holding it (the manifest channel)",
    )

    try:
        from_env = json.loads(env.get("SM_HPS") or "{}")
    except json.JSONDecodeError as e:
        raise InputError(f"SM_HPS is not JSON: {e}") from e
    if not isinstance(from_env, dict):
        raise InputError("SM_HPS must be a JSON object")
    for name, (kind, default, help_text) in HYPERPARAMETERS.items():
        parser.add_argument(*both(name), dest=name, type=kind, default=None, help=f"{help_text} (default {default})")
    args = parser.parse_args(argv)

    hps: dict[str, Any] = {}
    unknown = sorted(k for k in from_env if k.replace("-", "_") not in HYPERPARAMETERS)
    if unknown:
        raise InputError(f"unknown hyperparameters in SM_HPS: {', '.join(unknown)}")
    for name, (kind, default, _) in HYPERPARAMETERS.items():
        value = getattr(args, name)
        if value is None:
            raw = from_env.get(name, from_env.get(name.replace("_", "-"), default))
            try:
                value = kind(raw)
            except (TypeError, ValueError) as e:
                raise InputError(f"hyperparameter {name}={raw!r} is not a {kind.__name__}") from e
        hps[name] = value
    if hps["estimator"] not in ("random_forest", "gradient_boosting"):
        raise InputError(f"estimator {hps['estimator']!r}: expected random_forest or gradient_boosting")
    if hps["class_weight"] not in ("balanced", "none"):
        raise InputError(f"class_weight {hps['class_weight']!r}: expected balanced or none")
    if hps["trees_per_node"] < 0:
        raise InputError(f"trees_per_node must be 0 (one node) or more, got {hps['trees_per_node']}")
    for name in ("n_estimators", "min_samples_leaf", "test_vectors_per_class"):
        if hps[name] < 1:
            raise InputError(f"{name} must be at least 1, got {hps[name]}")
    if hps["max_depth"] < 0:
        raise InputError(f"max_depth must be 0 (unlimited) or more, got {hps['max_depth']}")
    if not 0 < hps["learning_rate"] <= 1:
        raise InputError(f"learning_rate must be in (0, 1], got {hps['learning_rate']}")
    args.hyperparameters = hps
    for name in ("train", "validation", "model_dir"):
        if not getattr(args, name):
            flag = "--" + name.replace("_", "-")
            env_name = {"train": "SM_CHANNEL_TRAIN", "validation": "SM_CHANNEL_VALIDATION"}.get(name, "SM_MODEL_DIR")
            raise InputError(f"{flag} is required (or set {env_name})")
    return args


def read_channel(channel: str, directory: Path) -> Split:
    """Reads every CSV file of a channel; refuses anything that is not the dataset's schema."""
    if not directory.is_dir():
        raise InputError(f"{channel} channel {directory} is not a directory")
    paths = sorted(directory.glob("*.csv"))
    if not paths:
        raise InputError(f"{channel} channel {directory} holds no .csv file")
    features: list[str] | None = None
    rows: list[list[float]] = []
    labels: list[str] = []
    run_ids: list[int] = []
    times: list[float] = []
    where: list[str] = []
    files = []
    for path in paths:
        rel = f"{channel}/{path.name}"
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{rel} is empty (no header)")
            if tuple(header[:3]) != META_COLUMNS or len(header) <= 3:
                raise InputError(f"{rel}: header must start with {','.join(META_COLUMNS)} and list the features")
            if features is None:
                features = header[3:]
            elif header[3:] != features:
                raise InputError(f"{rel}: feature columns differ from the channel's first file")
            count = 0
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise InputError(f"{rel}:{line}: {len(row)} fields, the header has {len(header)}")
                try:
                    values = [float(v) for v in row[3:]]
                    run_ids.append(int(row[0]))
                    times.append(float(row[1]))
                except ValueError as e:
                    raise InputError(f"{rel}:{line}: {e}") from e
                if not all(np.isfinite(values)):
                    raise InputError(f"{rel}:{line}: a feature is not a finite number")
                if not row[2]:
                    raise InputError(f"{rel}:{line}: empty label")
                rows.append(values)
                labels.append(row[2])
                where.append(f"{rel}:{line}")
                count += 1
        files.append({"path": rel, "sha256": sha256_file(path), "rows": count})
    if not rows:
        raise InputError(f"{channel} channel {directory} holds no data rows")
    assert features is not None
    return Split(
        files=files,
        features=features,
        x=np.asarray(rows, dtype=np.float64),
        labels=labels,
        run_ids=np.asarray(run_ids),
        t_s=np.asarray(times),
        where=where,
    )


def read_manifest(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    if Path(path).is_dir():
        candidates = sorted(Path(path).glob("*.json"))
        named = [c for c in candidates if c.name == "manifest.json"]
        if not named and len(candidates) != 1:
            raise InputError(f"manifest directory {path} holds no manifest.json")
        path = str((named or candidates)[0])
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise InputError(f"manifest {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise InputError(f"manifest {path} is not JSON: {e}") from e
    for key in ("training_digest", "schema", "window_samples", "poll_period_ms", "seed"):
        if key not in manifest:
            raise InputError(f"manifest {path} has no {key!r}: not a device-sim dataset manifest")
    return manifest


def class_names(train: Split, validation: Split, manifest: dict[str, Any] | None) -> list[str]:
    """``normal`` first, then the fault kinds sorted: the dataset's order."""
    seen = set(train.labels)
    if manifest is not None:
        classes = list(manifest["schema"]["classes"])
    else:
        classes = [NORMAL] + sorted(seen - {NORMAL})
    missing = [c for c in classes if c not in seen]
    if missing:
        raise InputError(f"the train channel has no row of class {', '.join(missing)}")
    unknown = sorted(set(train.labels + validation.labels) - set(classes))
    if unknown:
        raise InputError(f"labels {', '.join(unknown)} are not classes of the dataset ({', '.join(classes)})")
    return classes


def build_estimator(hps: dict[str, Any]):
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    depth = hps["max_depth"] or None
    if hps["estimator"] == "random_forest":
        return RandomForestClassifier(
            n_estimators=hps["n_estimators"],
            max_depth=depth,
            min_samples_leaf=hps["min_samples_leaf"],
            class_weight=None if hps["class_weight"] == "none" else "balanced",
            random_state=hps["seed"],
            n_jobs=1,
        )
    return GradientBoostingClassifier(
        n_estimators=hps["n_estimators"],
        max_depth=depth or 3,
        min_samples_leaf=hps["min_samples_leaf"],
        learning_rate=hps["learning_rate"],
        random_state=hps["seed"],
    )


def fit(estimator, x: np.ndarray, y: np.ndarray, hps: dict[str, Any]) -> None:
    if hps["estimator"] == "gradient_boosting" and hps["class_weight"] == "balanced":
        from sklearn.utils.class_weight import compute_sample_weight

        estimator.fit(x, y, sample_weight=compute_sample_weight("balanced", y))
    else:
        estimator.fit(x, y)


# The comparisons of the ONNX-ML tree ensembles' branch modes.
BRANCH_TESTS = {
    "BRANCH_LEQ": np.less_equal,
    "BRANCH_LT": np.less,
    "BRANCH_GTE": np.greater_equal,
    "BRANCH_GT": np.greater,
    "BRANCH_EQ": np.equal,
    "BRANCH_NEQ": np.not_equal,
}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def node_visits(attrs: dict[str, Any], tree: int, rows: np.ndarray) -> dict[int, int]:
    """How many of ``rows`` (float32 ``[N, features]``) reach each leaf of tree ``tree`` of a
    ``TreeEnsembleClassifier`` with attributes ``attrs``, by node id: the tree walked as the
    ONNX-ML operator defines it (each branch mode's comparison; a missing value goes where
    ``nodes_missing_value_tracks_true`` says). Leaves no row reaches count 0."""
    at = [i for i, t in enumerate(attrs["nodes_treeids"]) if t == tree]
    ids = [attrs["nodes_nodeids"][i] for i in at]
    position = {node: k for k, node in enumerate(ids)}
    modes = [_text(attrs["nodes_modes"][i]) for i in at]
    unknown = set(modes) - set(BRANCH_TESTS) - {"LEAF"}
    if unknown:
        raise ValueError(f"tree {tree}: unknown node modes {sorted(unknown)}")
    branch = np.asarray([m != "LEAF" for m in modes])
    children = {attrs[k][i] for i, m in zip(at, modes) if m != "LEAF" for k in ("nodes_truenodeids", "nodes_falsenodeids")}
    roots = [node for node in ids if node not in children]
    if len(roots) != 1:
        raise ValueError(f"tree {tree} has {len(roots)} roots")

    def follow(key: str) -> np.ndarray:
        return np.asarray([position[attrs[key][i]] if b else k for k, (i, b) in enumerate(zip(at, branch))])

    on_true, on_false = follow("nodes_truenodeids"), follow("nodes_falsenodeids")
    feature = np.asarray([attrs["nodes_featureids"][i] for i in at])
    threshold = np.asarray([attrs["nodes_values"][i] for i in at], dtype=np.float32)
    tracks = attrs.get("nodes_missing_value_tracks_true") or [0] * len(attrs["nodes_treeids"])
    missing_true = np.asarray([bool(tracks[i]) for i in at])
    mode_of = np.asarray([modes[k] for k in range(len(at))])
    current = np.full(len(rows), position[roots[0]])
    for _ in range(len(at)):
        active = np.flatnonzero(branch[current])
        if len(active) == 0:
            break
        here = current[active]
        x = rows[active, feature[here]]
        decision = np.zeros(len(active), dtype=bool)
        for mode, test in BRANCH_TESTS.items():
            pick = mode_of[here] == mode
            decision[pick] = test(x[pick], threshold[here][pick])
        decision = np.where(np.isnan(x), missing_true[here], decision)
        current[active] = np.where(decision, on_true[here], on_false[here])
    counts = np.bincount(current, minlength=len(at))
    return {node: int(counts[k]) for k, node in enumerate(ids) if not branch[k]}


def renumber_tree(attrs: dict[str, Any], tree: int, visits: dict[int, int]) -> dict[int, int]:
    """New node ids for tree ``tree``: the root 0, then the branches in their present order, then
    the leaves, most visited first (``visits`` by node id; equal counts keep their order). tract
    stores a node's leaf weights in node id order and steps through them from the first for each
    tree it evaluates, so this puts the leaves most windows reach where tract finds them soonest.
    The ids stay 0..n-1 within the tree, as tract requires."""
    at = [i for i, t in enumerate(attrs["nodes_treeids"]) if t == tree]
    ids = [attrs["nodes_nodeids"][i] for i in at]
    leaves = [attrs["nodes_nodeids"][i] for i in at if _text(attrs["nodes_modes"][i]) == "LEAF"]
    children = {attrs[k][i] for i in at if _text(attrs["nodes_modes"][i]) != "LEAF"
                for k in ("nodes_truenodeids", "nodes_falsenodeids")}
    root = next(node for node in ids if node not in children)
    branches = [node for node in ids if node not in leaves and node != root]
    leaves.sort(key=lambda node: -visits.get(node, 0))
    return {old: new for new, old in enumerate([root, *branches, *leaves])}


def layout_for_tract(model, trees_per_node: int, rows: np.ndarray | None = None) -> None:
    """Rewrites a summing ``TreeEnsembleClassifier`` (a random forest) in place, for tract-onnx.

    tract finds a leaf's weights by stepping through its node's table of leaf weights from the
    start (in tree, then node id order) for every tree it evaluates: a tree costs as many steps
    as there are weights before its leaf's, so one node with all the trees costs time in the
    square of the forest's size. Three rewrites, none of which changes what the model computes:

    - leaf weights of 0 are dropped (a random forest's leaf lists every class, mostly with 0;
      adding 0 changes no sum);
    - with ``rows`` (float32 ``[N, features]``, the training rows), each tree's nodes are
      renumbered so that its leaves come in the order of how many rows reach them, most first
      (``renumber_tree``): the leaves most windows reach are found after the fewest steps;
    - the trees are split into nodes of ``trees_per_node`` trees; their ``probabilities`` are
      added with ``Sum`` and ``label`` is their ``ArgMax`` (the first of equal maxima, like the
      ensemble's own label).

    Ensembles with a post transform or base values (gradient boosting) are left as they are: the
    transform applies to the whole sum. ``trees_per_node`` 0 keeps one node.
    """
    from onnx import helper

    graph = model.graph
    ensembles = [n for n in graph.node if n.op_type == "TreeEnsembleClassifier"]
    if len(ensembles) != 1:
        return
    node = ensembles[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    post = attrs.get("post_transform", b"NONE")
    if _text(post) != "NONE" or attrs.get("base_values"):
        return
    labels = list(attrs.get("classlabels_int64s", []))
    if labels != list(range(len(labels))):
        return

    trees = sorted(set(attrs["nodes_treeids"]))
    node_keys = [k for k in attrs if k.startswith("nodes_")]
    leaf_keys = ("class_treeids", "class_nodeids", "class_ids", "class_weights")
    new_id = {
        t: renumber_tree(attrs, t, {} if rows is None else node_visits(attrs, t, rows)) for t in trees
    }
    # Branches and weights listed in (tree, new node id) order: the order tract stores them in.
    rows_in_order = sorted(
        range(len(attrs["nodes_treeids"])),
        key=lambda i: (attrs["nodes_treeids"][i], new_id[attrs["nodes_treeids"][i]][attrs["nodes_nodeids"][i]]),
    )
    weights_in_order = sorted(
        (i for i, w in enumerate(attrs["class_weights"]) if w != 0.0),
        key=lambda i: (attrs["class_treeids"][i], new_id[attrs["class_treeids"][i]][attrs["class_nodeids"][i]], i),
    )

    def renumbered(key: str, i: int):
        value = attrs[key][i]
        if key == "nodes_nodeids":
            return new_id[attrs["nodes_treeids"][i]][value]
        if key in ("nodes_truenodeids", "nodes_falsenodeids") and _text(attrs["nodes_modes"][i]) != "LEAF":
            return new_id[attrs["nodes_treeids"][i]][value]
        if key == "class_nodeids":
            return new_id[attrs["class_treeids"][i]][value]
        return value

    size = trees_per_node or len(trees)
    groups = [set(trees[i:i + size]) for i in range(0, len(trees), size)]
    domain = node.domain
    new_nodes = []
    partial = []
    for g, group in enumerate(groups):
        kwargs = {k: [renumbered(k, i) for i in rows_in_order if attrs["nodes_treeids"][i] in group] for k in node_keys}
        kwargs.update(
            {k: [renumbered(k, i) for i in weights_in_order if attrs["class_treeids"][i] in group] for k in leaf_keys}
        )
        # Tree ids number each node's trees from 0, as runtimes expect.
        tree_number = {t: i for i, t in enumerate(sorted(group))}
        kwargs["nodes_treeids"] = [tree_number[t] for t in kwargs["nodes_treeids"]]
        kwargs["class_treeids"] = [tree_number[t] for t in kwargs["class_treeids"]]
        single = len(groups) == 1
        outs = [OUTPUT_LABEL, OUTPUT_PROBABILITIES] if single else [f"label_{g}", f"probabilities_{g}"]
        new_nodes.append(
            helper.make_node(
                "TreeEnsembleClassifier", [node.input[0]], outs, name=f"trees_{g}", domain=domain,
                classlabels_int64s=labels, post_transform="NONE", **kwargs,
            )
        )
        partial.append(outs[1])
    if len(groups) > 1:
        new_nodes.append(helper.make_node("Sum", partial, [OUTPUT_PROBABILITIES], name="sum_of_trees"))
        new_nodes.append(
            helper.make_node("ArgMax", [OUTPUT_PROBABILITIES], [OUTPUT_LABEL], name="label", axis=1, keepdims=0)
        )
    # The ensemble produced the graph's outputs directly (no ZipMap); anything after it stays.
    index = list(graph.node).index(node)
    rest = [n for i, n in enumerate(graph.node) if i != index]
    del graph.node[:]
    graph.node.extend(rest[:index] + new_nodes + rest[index:])


def merge_ensembles(model) -> None:
    """Rewrites, in place, a graph that ``layout_for_tract`` split (``TreeEnsembleClassifier``
    nodes summed by ``Sum``, the label their ``ArgMax``) back into one ensemble of all the trees,
    in the same order, so that it can be laid out again. A graph of one ensemble is left as it
    is; any other graph is refused with ``ValueError``."""
    from onnx import helper

    graph = model.graph
    ensembles = [n for n in graph.node if n.op_type == "TreeEnsembleClassifier"]
    if len(ensembles) == 1:
        return
    kinds = sorted({n.op_type for n in graph.node})
    sums = [n for n in graph.node if n.op_type == "Sum"]
    if kinds != ["ArgMax", "Sum", "TreeEnsembleClassifier"] or len(sums) != 1 or len(graph.node) != len(ensembles) + 2:
        raise ValueError(f"not a forest split by layout_for_tract: operators {kinds}")
    by_output = {n.output[1]: n for n in ensembles}
    try:
        ordered = [by_output[name] for name in sums[0].input]
    except KeyError as e:
        raise ValueError(f"Sum adds {e}, which no ensemble computes") from e
    merged: dict[str, list] = {}
    first_tree = 0
    for n in ordered:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        for key, value in attrs.items():
            if key in ("nodes_treeids", "class_treeids"):
                value = [first_tree + t for t in value]
            if key in ("classlabels_int64s", "post_transform"):
                merged[key] = value
            else:
                merged.setdefault(key, []).extend(value)
        first_tree += len(set(attrs["nodes_treeids"]))
    node = helper.make_node(
        "TreeEnsembleClassifier", [ordered[0].input[0]], [OUTPUT_LABEL, OUTPUT_PROBABILITIES], name="trees",
        domain=ordered[0].domain, **merged,
    )
    del graph.node[:]
    graph.node.append(node)


def export_onnx(estimator, n_features: int, trees_per_node: int, rows: np.ndarray | None = None):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    model = convert_sklearn(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET,
        options={id(estimator): {"zipmap": False}},
    )
    outputs = [o.name for o in model.graph.output]
    if outputs != [OUTPUT_LABEL, OUTPUT_PROBABILITIES]:
        raise RuntimeError(f"unexpected ONNX outputs {outputs}")
    layout_for_tract(model, trees_per_node, rows)
    ops = sorted({n.op_type for n in model.graph.node})
    if not set(ops) <= ALLOWED_OPS:
        raise RuntimeError(f"the ONNX graph uses {ops}; only {sorted(ALLOWED_OPS)} are known to run in tract-onnx")
    model.doc_string = f"{MODEL_NAME}: pump fault classifier over pump-features windows"
    # The converter names the graph with a random UUID: a fixed name keeps the bytes reproducible.
    model.graph.name = MODEL_NAME
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx.ml", 0) > TARGET_OPSET["ai.onnx.ml"]:
        raise RuntimeError(f"the ONNX graph needs ai.onnx.ml opset {opsets['ai.onnx.ml']}; tract-onnx runs up to 3")
    return model, ops, opsets


def metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        c: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4), "f1": round(float(f[i]), 4),
            "support": int(s[i])}
        for i, c in enumerate(classes)
    }
    return {
        "rows": int(len(y_true)),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(np.mean(f)), 4),
        "per_class": per_class,
        "confusion_matrix": {
            "rows_are": "true class, in classes order",
            "columns_are": "predicted class, in classes order",
            "counts": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        },
    }


def pick_test_vectors(validation: Split, y: np.ndarray, classes: list[str], per_class: int) -> list[int]:
    """Evenly spaced validation rows of every class: deterministic, every class covered."""
    picked: list[int] = []
    for k in range(len(classes)):
        idx = np.flatnonzero(y == k)
        if len(idx) == 0:
            continue
        take = min(per_class, len(idx))
        picked.extend(int(idx[i]) for i in np.linspace(0, len(idx) - 1, take).round().astype(int))
    return sorted(set(picked))


def write_json(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def train(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort

    started = time.monotonic()
    hps = args.hyperparameters
    train_split = read_channel("train", Path(args.train))
    validation = read_channel("validation", Path(args.validation))
    if validation.features != train_split.features:
        raise InputError("the validation channel's feature columns differ from the train channel's")
    manifest = read_manifest(args.manifest)
    digest = training_digest([(f["path"], f["sha256"]) for f in train_split.files + validation.files])
    if manifest is not None:
        if manifest["training_digest"] != digest:
            raise InputError(
                f"the channels' files do not match the manifest: training digest {digest}, "
                f"manifest {manifest['training_digest']}"
            )
        if manifest["schema"]["features"] != train_split.features:
            raise InputError("the channels' feature columns differ from the manifest's schema")
    common = set(train_split.run_ids.tolist()) & set(validation.run_ids.tolist())
    if common:
        raise InputError(f"runs {sorted(common)[:5]} are in both train and validation: the split must be by run")
    classes = class_names(train_split, validation, manifest)
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.asarray([index[v] for v in train_split.labels])
    y_val = np.asarray([index[v] for v in validation.labels])

    estimator = build_estimator(hps)
    # Trees compare float32 features with float32 thresholds in ONNX: train on the same values.
    x_train = train_split.x.astype(np.float32)
    x_val = validation.x.astype(np.float32)
    fit(estimator, x_train, y_train, hps)
    fit_s = time.monotonic() - started

    # The training rows order each tree's leaves by how often windows reach them (layout_for_tract).
    model, ops, opsets = export_onnx(estimator, x_train.shape[1], hps["trees_per_node"], x_train)
    model_dir = Path(args.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    onnx_bytes = model.SerializeToString()
    onnx_path = model_dir / "model.onnx"
    tmp = onnx_path.with_suffix(".onnx.tmp")
    tmp.write_bytes(onnx_bytes)
    os.replace(tmp, onnx_path)
    model_sha = hashlib.sha256(onnx_bytes).hexdigest()

    # The metrics are those of the exported model as onnxruntime runs it, not of the estimator.
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    label, probabilities = session.run([OUTPUT_LABEL, OUTPUT_PROBABILITIES], {INPUT_NAME: x_val})
    agreement = float(np.mean(label == estimator.predict(x_val)))
    validation_metrics = metrics(y_val, label, classes)
    validation_metrics["onnx_agrees_with_estimator"] = round(agreement, 6)

    picked = pick_test_vectors(validation, y_val, classes, hps["test_vectors_per_class"])
    vectors = [
        {
            "source": validation.where[i],
            "run_id": int(validation.run_ids[i]),
            "t_s": float(validation.t_s[i]),
            "class": validation.labels[i],
            "input": [float(v) for v in x_val[i]],
            OUTPUT_LABEL: int(label[i]),
            OUTPUT_PROBABILITIES: [float(v) for v in probabilities[i]],
        }
        for i in picked
    ]
    env_versions = versions()
    write_json(
        model_dir / "test-vectors.json",
        {
            "format_version": CARD_FORMAT_VERSION,
            "model_sha256": model_sha,
            "input": INPUT_NAME,
            "outputs": [OUTPUT_LABEL, OUTPUT_PROBABILITIES],
            "classes": classes,
            "tolerance_abs": PARITY_TOLERANCE,
            "reference": f"onnxruntime {env_versions['onnxruntime']}",
            "vectors": vectors,
        },
    )

    class_counts = {c: int(np.sum(y_train == i)) for i, c in enumerate(classes)}
    card = {
        "format_version": CARD_FORMAT_VERSION,
        "name": MODEL_NAME,
        "version": hps["model_version"],
        "model": {
            "file": "model.onnx",
            "sha256": model_sha,
            "bytes": len(onnx_bytes),
            "estimator": type(estimator).__name__,
            "opset": opsets,
            "ops": ops,
            "trained_with": env_versions,
        },
        "training_data": {
            "digest": digest,
            "digest_rule": "SHA-256 of the lines '{channel}/{file} {sha256}\\n' of the train and validation files, "
            "sorted (the dataset manifest's training_digest)",
            "files": train_split.files + validation.files,
            "rows": {"train": int(len(y_train)), "validation": int(len(y_val))},
            "train_rows_per_class": class_counts,
            "dataset": None
            if manifest is None
            else {
                k: manifest.get(k)
                for k in ("generator", "format_version", "seed", "hours", "run_minutes", "stride_samples")
            },
        },
        "hyperparameters": hps,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": [None, len(train_split.features)],
            "features": train_split.features,
            "source": "pump-features Features::vector(), in Features::names() order",
            "window_samples": None if manifest is None else manifest["window_samples"],
            "poll_period_ms": None if manifest is None else manifest["poll_period_ms"],
            "scaling": {
                "kind": "none",
                "why": "tree ensembles split on per-feature thresholds, which any per-feature scaling "
                "moves along; the raw vector keeps branch decisions free of runtime rounding",
            },
        },
        "output": {
            "classes": classes,
            OUTPUT_LABEL: {"name": OUTPUT_LABEL, "dtype": "int64", "shape": [None],
                           "meaning": "index into classes of the most probable class"},
            OUTPUT_PROBABILITIES: {"name": OUTPUT_PROBABILITIES, "dtype": "float32", "shape": [None, len(classes)],
                                   "meaning": "per class, in classes order; rows sum to 1"},
        },
        "metrics": {"validation": validation_metrics},
        "test_vectors": {"file": "test-vectors.json", "count": len(vectors), "tolerance_abs": PARITY_TOLERANCE},
    }
    write_json(model_dir / "model-card.json", card)

    report = {
        "model_sha256": model_sha,
        "fit_seconds": round(fit_s, 2),
        "total_seconds": round(time.monotonic() - started, 2),
        "validation_macro_f1": validation_metrics["macro_f1"],
        "validation_accuracy": validation_metrics["accuracy"],
        "train_rows": int(len(y_train)),
        "validation_rows": int(len(y_val)),
    }
    if args.output_data_dir:
        out = Path(args.output_data_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "training-report.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv, dict(os.environ))
        report = train(args)
    except InputError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
