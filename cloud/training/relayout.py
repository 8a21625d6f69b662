#!/usr/bin/env python3
"""Lays a trained model out again for tract, from its files: same trees, same outputs.

Reads a model directory (``model.onnx``, ``model-card.json``, ``test-vectors.json``, as
``train.py`` writes them), joins its ensembles back into one (``train.merge_ensembles``) and lays
the forest out as ``train.py`` now does (``train.layout_for_tract``): zero weights dropped, each
tree's leaves numbered by how many of ``--rows`` reach them (the training channel the model was
trained on: the card's ``training_data`` says which dataset), nodes of ``--trees-per-node``
trees. Before it writes anything it checks with onnxruntime that the new graph computes what the
old one does, on every row of ``--rows`` and every test vector (labels equal, probabilities within
``--tolerance``). It writes ``model.onnx``, the card (new SHA-256, size and ``trees_per_node``;
everything else as it was) and the test vectors (the new SHA-256; the reference outputs stay
onnxruntime's on the original model) into ``--out``, which may be the model directory itself.

    target/venv/bin/python cloud/training/relayout.py --model-dir components/model \\
        --rows DATASET/train --out components/model

Prints one JSON line (the check's figures, the new digest). Exit codes: 0 written, 1 the new
graph does not compute what the old one does (nothing written), 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

import train


def outputs(model_bytes: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    label, probabilities = session.run([train.OUTPUT_LABEL, train.OUTPUT_PROBABILITIES], {train.INPUT_NAME: x})
    return label, probabilities


def relayout(model_dir: Path, rows_dir: Path, out: Path, trees_per_node: int, tolerance: float) -> dict:
    import onnx

    try:
        card = json.loads((model_dir / "model-card.json").read_text())
        vectors = json.loads((model_dir / "test-vectors.json").read_text())
        old_bytes = (model_dir / card["model"]["file"]).read_bytes()
    except (OSError, ValueError, KeyError) as e:
        raise train.InputError(f"{model_dir} is not a model directory: {e}") from e
    if hashlib.sha256(old_bytes).hexdigest() != card["model"]["sha256"]:
        raise train.InputError(f"{model_dir}: the model file does not match its card's SHA-256")
    rows = train.read_channel("rows", rows_dir)
    if rows.features != card["input"]["features"]:
        raise train.InputError(f"{rows_dir}: the feature columns are not the model's")
    x = rows.x.astype(np.float32)

    model = onnx.load_from_string(old_bytes)
    try:
        train.merge_ensembles(model)
    except ValueError as e:
        raise train.InputError(f"{model_dir}: {e}") from e
    train.layout_for_tract(model, trees_per_node, x)
    onnx.checker.check_model(model)
    new_bytes = model.SerializeToString()

    x_vectors = np.asarray([v["input"] for v in vectors["vectors"]], dtype=np.float32)
    old_label, old_p = outputs(old_bytes, x)
    new_label, new_p = outputs(new_bytes, x)
    vec_label, vec_p = outputs(new_bytes, x_vectors)
    want_label = np.asarray([v["label"] for v in vectors["vectors"]])
    want_p = np.asarray([v["probabilities"] for v in vectors["vectors"]])
    check = {
        "rows": len(x),
        "rows_max_abs_diff": float(np.max(np.abs(new_p - old_p))),
        "rows_labels_differ": int(np.sum(new_label != old_label)),
        "vectors": len(x_vectors),
        "vectors_max_abs_diff": float(np.max(np.abs(vec_p - want_p))),
        "vectors_labels_differ": int(np.sum(vec_label != want_label)),
    }
    same = (
        check["rows_labels_differ"] == 0
        and check["vectors_labels_differ"] == 0
        and check["rows_max_abs_diff"] <= tolerance
        and check["vectors_max_abs_diff"] <= min(tolerance, vectors["tolerance_abs"])
    )
    digest = hashlib.sha256(new_bytes).hexdigest()
    report = {"model_sha256": digest, "bytes": len(new_bytes), "trees_per_node": trees_per_node, "check": check}
    if not same:
        report["error"] = "the laid-out graph does not compute what the model does: nothing written"
        return report

    out.mkdir(parents=True, exist_ok=True)
    card["model"].update({"sha256": digest, "bytes": len(new_bytes),
                          "ops": sorted({n.op_type for n in model.graph.node})})
    card.setdefault("hyperparameters", {})["trees_per_node"] = trees_per_node
    vectors["model_sha256"] = digest
    model_path = out / card["model"]["file"]
    tmp = model_path.with_suffix(model_path.suffix + ".tmp")
    tmp.write_bytes(new_bytes)
    os.replace(tmp, model_path)
    train.write_json(out / "test-vectors.json", vectors)
    train.write_json(out / "model-card.json", card)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="the model directory to read")
    parser.add_argument("--rows", type=Path, required=True, help="a dataset channel (e.g. DATASET/train)")
    parser.add_argument("--out", type=Path, required=True, help="where to write (may be --model-dir)")
    parser.add_argument("--trees-per-node", type=int, default=train.HYPERPARAMETERS["trees_per_node"][1])
    parser.add_argument("--tolerance", type=float, default=1e-6, help="largest probability difference allowed")
    args = parser.parse_args(argv)
    if args.trees_per_node < 0:
        parser.error("--trees-per-node must be 0 (one node) or more")
    try:
        report = relayout(args.model_dir, args.rows, args.out, args.trees_per_node, args.tolerance)
    except train.InputError as e:
        print(f"relayout.py: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 1 if "error" in report else 0


if __name__ == "__main__":
    sys.exit(main())
