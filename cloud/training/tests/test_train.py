"""train.py end to end on a small generated dataset: artifacts, parity data, contract, bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import train
from conftest import TIMEOUT_S, pump_analyzer_bin, run_train, train_small


def card_of(model_dir: Path) -> dict:
    return json.loads((model_dir / "model-card.json").read_text())


def test_model_card_describes_the_model_its_data_and_its_schema(trained: Path, manifest: dict):
    card = card_of(trained)
    onnx_bytes = (trained / "model.onnx").read_bytes()
    assert card["name"] == "pump-fault-classifier"
    assert card["version"] == "0.1.0"
    assert card["model"]["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert card["model"]["bytes"] == len(onnx_bytes)
    assert card["training_data"]["digest"] == manifest["training_digest"]
    assert card["training_data"]["dataset"]["seed"] == 3
    assert card["hyperparameters"]["n_estimators"] == 20
    assert card["hyperparameters"]["max_depth"] == 8
    schema = card["input"]
    assert schema["name"] == "features" and schema["dtype"] == "float32"
    assert schema["features"] == manifest["schema"]["features"]
    assert schema["shape"] == [None, len(manifest["schema"]["features"])]
    assert (schema["window_samples"], schema["poll_period_ms"]) == (20, 1000)
    assert schema["scaling"]["kind"] == "none"
    assert card["output"]["classes"] == manifest["schema"]["classes"]
    validation = card["metrics"]["validation"]
    assert set(validation["per_class"]) == set(manifest["schema"]["classes"])
    assert validation["rows"] == manifest["splits"]["validation"]["rows"]
    assert 0.0 <= validation["macro_f1"] <= 1.0
    assert validation["onnx_agrees_with_estimator"] == 1.0
    counts = np.asarray(validation["confusion_matrix"]["counts"])
    assert counts.sum() == validation["rows"]


def test_the_onnx_graph_is_what_tract_can_run(trained: Path, manifest: dict):
    model = onnx.load(str(trained / "model.onnx"))
    onnx.checker.check_model(model)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert 1 <= opsets.get("ai.onnx.ml", 0) <= 3, opsets
    assert {n.op_type for n in model.graph.node} <= {"TreeEnsembleClassifier", "Identity", "Sum", "ArgMax"}
    assert "ZipMap" not in {n.op_type for n in model.graph.node}
    (inp,) = model.graph.input
    assert inp.name == "features"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert len(dims) == 2 and dims[1].dim_value == len(manifest["schema"]["features"])
    outputs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert outputs == {"label": onnx.TensorProto.INT64, "probabilities": onnx.TensorProto.FLOAT}


def test_onnxruntime_reproduces_the_test_vectors(trained: Path, dataset: Path, manifest: dict):
    vectors = json.loads((trained / "test-vectors.json").read_text())
    onnx_bytes = (trained / "model.onnx").read_bytes()
    assert vectors["model_sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert vectors["tolerance_abs"] == 1e-5
    assert vectors["classes"] == manifest["schema"]["classes"]
    rows = vectors["vectors"]
    # Up to six rows of every class present in the validation split.
    present = {c for c, n in manifest["splits"]["validation"]["classes"].items() if n > 0}
    assert {v["class"] for v in rows} == present
    assert len(rows) >= 5 * len(present) // 2
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    x = np.asarray([v["input"] for v in rows], dtype=np.float32)
    assert x.shape[1] == len(manifest["schema"]["features"])
    label, probabilities = session.run(["label", "probabilities"], {"features": x})
    assert label.tolist() == [v["label"] for v in rows]
    expected = np.asarray([v["probabilities"] for v in rows], dtype=np.float64)
    assert np.max(np.abs(probabilities - expected)) <= 1e-5
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # A vector's input is the row it names, as float32.
    first = rows[0]
    path, line = first["source"].rsplit(":", 1)
    text = (dataset / path).read_text().splitlines()[int(line) - 1]
    values = [float(v) for v in text.split(",")[3:]]
    assert np.asarray(values, dtype=np.float32).tolist() == first["input"]


def ensembles(model) -> list:
    return [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]


def test_the_forest_is_laid_out_for_tract_and_computes_what_one_ensemble_does(
    dataset: Path, trained: Path, tmp_path: Path
):
    split = onnx.load(str(trained / "model.onnx"))
    # 20 trees, 2 per node (the default), then their sum and its argmax.
    assert len(ensembles(split)) == 10
    assert [n.op_type for n in split.graph.node][-2:] == ["Sum", "ArgMax"]
    for node in ensembles(split):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert sorted(set(attrs["nodes_treeids"])) == [0, 1], "tree ids count from 0 in every node"
        assert all(w != 0.0 for w in attrs["class_weights"]), "zero leaf weights are dropped"

    train_small(dataset, tmp_path, "--trees-per-node", "0")
    whole = onnx.load(str(tmp_path / "model.onnx"))
    assert [n.op_type for n in whole.graph.node] == ["TreeEnsembleClassifier"]

    x = train.read_channel("validation", dataset / "validation").x.astype(np.float32)
    outputs = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            ["label", "probabilities"], {"features": x}
        )
        for m in (split, whole)
    ]
    (split_label, split_p), (whole_label, whole_p) = outputs
    assert np.max(np.abs(split_p - whole_p)) <= 1e-6
    assert split_label.tolist() == whole_label.tolist()


def attributes(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_each_trees_leaves_are_numbered_by_how_many_training_rows_reach_them(dataset: Path, trained: Path):
    x = train.read_channel("train", dataset / "train").x.astype(np.float32)
    for node in ensembles(onnx.load(str(trained / "model.onnx"))):
        attrs = attributes(node)
        for tree in sorted(set(attrs["nodes_treeids"])):
            ids = [n for t, n in zip(attrs["nodes_treeids"], attrs["nodes_nodeids"]) if t == tree]
            assert sorted(ids) == list(range(len(ids))), "node ids are 0..n-1 within a tree, as tract requires"
            assert ids[0] == 0 and 0 not in {
                attrs[k][i] for i, t in enumerate(attrs["nodes_treeids"]) if t == tree
                for k in ("nodes_truenodeids", "nodes_falsenodeids") if attrs["nodes_modes"][i] != b"LEAF"
            }, "the root is node 0"
            visits = train.node_visits(attrs, tree, x)
            leaves = sorted(visits)
            assert sum(visits.values()) == len(x), "every row reaches one leaf"
            counts = [visits[n] for n in leaves]
            assert counts == sorted(counts, reverse=True), f"tree {tree}: leaves by visits, most first: {counts}"
            assert counts[0] > counts[-1], "the counts differ, so the order says something"
            branches = [n for n in ids if n not in visits]
            assert max(branches) < min(leaves), "branches first, then the leaves"


def test_node_visits_follows_every_branch_mode_and_missing_values():
    # One tree: node 0 tests feature 0 with the mode, true -> leaf 1, false -> leaf 2; a missing
    # value goes to the true side.
    x = np.asarray([[1.0], [2.0], [3.0], [np.nan]], dtype=np.float32)
    expected = {  # rows reaching leaf 1 (true) for each mode, against the threshold 2
        "BRANCH_LEQ": 2, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 1, "BRANCH_EQ": 1, "BRANCH_NEQ": 2,
    }
    for mode, true_rows in expected.items():
        attrs = {
            "nodes_treeids": [0, 0, 0], "nodes_nodeids": [0, 1, 2], "nodes_featureids": [0, 0, 0],
            "nodes_values": [2.0, 0.0, 0.0], "nodes_modes": [mode.encode(), b"LEAF", b"LEAF"],
            "nodes_truenodeids": [1, 0, 0], "nodes_falsenodeids": [2, 0, 0],
            "nodes_missing_value_tracks_true": [1, 0, 0],
        }
        assert train.node_visits(attrs, 0, x) == {1: true_rows + 1, 2: 3 - true_rows}, mode


def run_relayout(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(Path(train.__file__).parent / "relayout.py"), *args],
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )


def test_relayout_rewrites_a_trained_model_into_one_that_computes_the_same(dataset: Path, trained: Path, tmp_path: Path):
    out = tmp_path / "relaid"
    done = run_relayout("--model-dir", str(trained), "--rows", str(dataset / "train"), "--out", str(out),
                        "--trees-per-node", "1")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["check"]["rows_labels_differ"] == 0 and report["check"]["vectors_labels_differ"] == 0
    new = onnx.load(str(out / "model.onnx"))
    assert len(ensembles(new)) == 20, "one tree per node"
    card, old_card = card_of(out), card_of(trained)
    assert card["model"]["sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert card["hyperparameters"]["trees_per_node"] == 1
    assert card["input"] == old_card["input"] and card["output"] == old_card["output"]
    vectors = json.loads((out / "test-vectors.json").read_text())
    assert vectors["model_sha256"] == card["model"]["sha256"]
    assert vectors["vectors"] == json.loads((trained / "test-vectors.json").read_text())["vectors"]
    x = train.read_channel("validation", dataset / "validation").x.astype(np.float32)
    (old_label, old_p), (new_label, new_p) = (
        ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"]).run(
            ["label", "probabilities"], {"features": x})
        for d in (trained, out)
    )
    assert new_label.tolist() == old_label.tolist()
    assert np.max(np.abs(new_p - old_p)) <= 1e-6
    # And tract, with every check the component makes, reproduces the original test vectors.
    done = subprocess.run([str(pump_analyzer_bin()), "verify-model", str(out), "--runs", "10"],
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["parity"]["mismatches"] == []


def test_relayout_refuses_what_is_not_a_model_directory(dataset: Path, trained: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    (broken / "model.onnx").write_bytes((trained / "model.onnx").read_bytes()[:-10])
    for model_dir, want in ((tmp_path / "absent", "is not a model directory"),
                            (broken, "does not match its card's SHA-256")):
        done = run_relayout("--model-dir", str(model_dir), "--rows", str(dataset / "train"), "--out", str(tmp_path / "o"))
        assert done.returncode == 2 and want in done.stderr, done.stderr
        assert not (tmp_path / "o").exists(), "nothing is written"


def test_tract_loads_the_trained_model_and_reproduces_its_test_vectors(trained: Path):
    """The edge's own check: `pump-analyzer verify-model` loads the model with tract, with every
    check the component makes, and compares tract's outputs with onnxruntime's test vectors."""
    done = subprocess.run(
        [str(pump_analyzer_bin()), "verify-model", str(trained), "--runs", "50"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    vectors = json.loads((trained / "test-vectors.json").read_text())["vectors"]
    assert report["sha256"] == card_of(trained)["model"]["sha256"]
    assert report["parity"]["vectors"] == len(vectors)
    assert report["parity"]["mismatches"] == []
    assert report["parity"]["max_abs_diff"] <= 1e-5


def test_the_same_data_and_seed_give_the_same_model(dataset: Path, trained: Path, tmp_path: Path):
    train_small(dataset, tmp_path)
    for name in ("model.onnx", "model-card.json", "test-vectors.json"):
        assert (tmp_path / name).read_bytes() == (trained / name).read_bytes(), name


def test_sagemaker_environment_is_honoured_and_the_command_line_wins(dataset: Path, tmp_path: Path):
    channel = tmp_path / "input" / "data"
    for name in ("train", "validation"):
        shutil.copytree(dataset / name, channel / name)
    (channel / "manifest").mkdir()
    shutil.copy(dataset / "manifest.json", channel / "manifest" / "manifest.json")
    env = {
        "PATH": "/usr/bin:/bin",
        "SM_CHANNEL_TRAIN": str(channel / "train"),
        "SM_CHANNEL_VALIDATION": str(channel / "validation"),
        "SM_CHANNEL_MANIFEST": str(channel / "manifest"),
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data"),
        "SM_HPS": json.dumps({"n_estimators": 5, "model_version": "9.9.9", "max_depth": 4}),
    }
    done = run_train(["--n_estimators", "7"], env=env)
    assert done.returncode == 0, done.stderr
    card = card_of(tmp_path / "model")
    assert card["version"] == "9.9.9"
    assert card["hyperparameters"]["n_estimators"] == 7, "the command line beats SM_HPS"
    assert card["hyperparameters"]["max_depth"] == 4
    assert card["input"]["window_samples"] == 20, "the manifest channel was read"
    report = json.loads((tmp_path / "output" / "data" / "training-report.json").read_text())
    assert report["model_sha256"] == card["model"]["sha256"]
    assert json.loads(done.stdout.strip().splitlines()[-1])["validation_macro_f1"] == report["validation_macro_f1"]


def copy_dataset(dataset: Path, to: Path) -> Path:
    shutil.copytree(dataset, to)
    return to


@pytest.mark.parametrize(
    "case",
    ["no_csv", "not_a_number", "short_row", "wrong_header", "manifest_mismatch", "unknown_hp", "bad_hp",
     "missing_train", "run_in_both_splits"],
)
def test_bad_input_is_refused_with_a_clear_error(case: str, dataset: Path, tmp_path: Path, monkeypatch, capsys):
    ds = copy_dataset(dataset, tmp_path / "ds")
    train_csv = ds / "train" / "train.csv"
    lines = train_csv.read_text().splitlines()
    args = ["--train", str(ds / "train"), "--validation", str(ds / "validation"), "--model-dir", str(tmp_path / "m")]
    for var in ("SM_HPS", "SM_CHANNEL_TRAIN", "SM_CHANNEL_VALIDATION", "SM_MODEL_DIR", "SM_CHANNEL_MANIFEST"):
        monkeypatch.delenv(var, raising=False)
    if case == "no_csv":
        train_csv.unlink()
        want = "holds no .csv file"
    elif case == "not_a_number":
        fields = lines[5].split(",")
        fields[7] = "fast"
        lines[5] = ",".join(fields)
        train_csv.write_text("\n".join(lines) + "\n")
        want = "train/train.csv:6: could not convert string to float: 'fast'"
    elif case == "short_row":
        lines[2] = ",".join(lines[2].split(",")[:-1])
        train_csv.write_text("\n".join(lines) + "\n")
        width = len(lines[0].split(","))
        want = f"train/train.csv:3: {width - 1} fields, the header has {width}"
    elif case == "wrong_header":
        lines[0] = lines[0].replace("run_id", "run", 1)
        train_csv.write_text("\n".join(lines) + "\n")
        want = "header must start with run_id,t_s,label"
    elif case == "manifest_mismatch":
        train_csv.write_text("\n".join(lines[:-1]) + "\n")
        args += ["--manifest", str(ds / "manifest.json")]
        want = "do not match the manifest"
    elif case == "unknown_hp":
        monkeypatch.setenv("SM_HPS", json.dumps({"n_trees": 5}))
        want = "unknown hyperparameters in SM_HPS: n_trees"
    elif case == "bad_hp":
        args += ["--estimator", "svm"]
        want = "estimator 'svm': expected random_forest or gradient_boosting"
    elif case == "missing_train":
        args = args[2:]
        want = "--train is required (or set SM_CHANNEL_TRAIN)"
    else:
        val = (ds / "validation" / "validation.csv").read_text().splitlines()[1]
        train_csv.write_text("\n".join(lines + [val]) + "\n")
        want = "in both train and validation"
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert want in err, err
    assert not (tmp_path / "m" / "model.onnx").exists(), "nothing is written for bad input"
