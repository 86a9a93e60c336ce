"""Results a user can trust: saved runs evaluate to their reported numbers, every check runs
before the first byte is written, resume verifies the workdir, the table of methods is open."""

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdl_jax
from mdl_jax._cli import main

ROOT = Path(__file__).parents[1]
TINY = {"dataset": "gaussian_mixture", "widths": [2, 6, 2], "modes": [1, 2], "seeds": [0, 1],
        "epochs": 2, "learning_rates": [0.03], "methods": ["mdl"]}



def _train(tmp_path, name="run", **changes):
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps({**TINY, **changes}))
    return main(["train", "--config", str(config), "--workdir", str(tmp_path / name), "--quiet"])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_saved_padded_run_evaluates_to_its_reported_accuracy(tmp_path):
    assert _train(tmp_path, modes=[1, 2, 4], widths=[2, 8, 8, 2]) == 0
    saved = mdl_jax.load_params(tmp_path / "run", "mdl")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["runs"]
    data = mdl_jax.load_dataset("gaussian_mixture")
    for run, reported in enumerate(summary):
        params = mdl_jax.select_run(saved.params, run)
        for mask in (None, tuple(m[run] for m in saved.mode_mask)):  # the zeros make the mask optional
            logits = mdl_jax.apply(params, jnp.asarray(data.test_images), spec=saved.spec, mode_mask=mask)
            accuracy = float(np.mean(np.argmax(logits, -1) == data.test_labels))
            assert accuracy == pytest.approx(reported["final_test_accuracy"], abs=1e-6)
        inactive = np.asarray(saved.mode_mask[0][run]) == 0
        assert inactive.sum() == 4 - reported["modes"][0]
        assert not np.any(np.asarray(params["sigma"][0])[inactive])


def test_a_failed_data_check_leaves_the_workdir_as_it_was(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["train", "--workdir", str(workdir), "--data-dir", str(tmp_path / "missing"), "--quiet"]) == 2
    assert not workdir.exists()
    assert _train(tmp_path, widths=[3, 6, 2]) == 2  # the mixture has 2 features
    assert "set widths[0] = 2" in capsys.readouterr().err and not workdir.exists()
    assert _train(tmp_path, batch_size=100_000) == 2
    assert "larger than the 4000 training examples" in capsys.readouterr().err and not workdir.exists()
    workdir.mkdir()
    assert _train(tmp_path, widths=[5, 6, 2]) == 2  # an existing empty workdir is not written into
    assert list(workdir.iterdir()) == []
    assert _train(tmp_path) == 0  # the corrected command runs in the same workdir


@pytest.mark.parametrize("key, value", [("modes", [5, 15]), ("seeds", [0, 7]), ("widths", [2, 5, 2])])
def test_resume_refuses_an_edited_config_and_changes_nothing(tmp_path, capsys, key, value):
    assert _train(tmp_path) == 0
    workdir = tmp_path / "run"
    config = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**config, key: value}))
    before = _files(workdir)
    assert main(["train", "--resume", str(workdir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"changes '{key}' from" in err and "only accepts a larger 'epochs'" in err
    assert _files(workdir) == before


def test_resume_takes_a_new_data_dir_but_checks_the_data(tmp_path, mnist_dir):
    work = tmp_path / "run"
    config = {**TINY, "dataset": "mnist", "widths": [784, 4, 10], "modes": [2], "seeds": [0], "epochs": 1,
              "batch_size": 10000, "data_dir": str(mnist_dir)}
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert main(["train", "--config", str(tmp_path / "c.json"), "--workdir", str(work), "--quiet"]) == 0
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in Path(mnist_dir).iterdir():
        (moved / f.name).symlink_to(f.resolve())
    assert main(["train", "--resume", str(work), "--data-dir", str(moved), "--quiet"]) == 0
    assert json.loads((work / "config.json").read_text())["data_dir"] == str(moved)
    other = tmp_path / "other"  # same format, other content: refused
    other.mkdir()
    for f in Path(mnist_dir).iterdir():
        target = f.name.replace("train", "TMP").replace("t10k", "train").replace("TMP", "t10k")
        (other / target).symlink_to(f.resolve())
    assert main(["train", "--resume", str(work), "--data-dir", str(other), "--quiet"]) == 2


def test_cli_small_errors(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("epochs: 3\n")
    tiny = ["--set", "dataset=gaussian_mixture", "--set", "widths=[2,4,2]", "--set", "modes=[2]"]
    cases = [
        (["--set", "dataset=mnsit", "--data-dir", str(tmp_path)], "unknown dataset 'mnsit' (did you mean 'mnist'?)"),
        (["--resume", str(tmp_path / "nothing")], "no run to resume in"),
        (tiny + ["--workdir", str(tmp_path / "c.yaml")], "is a file, not a folder"),
        (["--config", str(tmp_path / "c.yaml")], "unsupported format '.yaml'"),
    ]
    for args, message in cases:
        assert main(["train", *args, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_modes_above_every_rank_warn_with_the_parameter_count(tmp_path, capsys):
    assert main(["train", "--print-config", "--set", "widths=[784,20,10]", "--set", "modes=[25]"]) == 0
    err = capsys.readouterr().err
    assert "mdl-jax: warning: mdl with p = 25 modes exceeds the full rank" in err and "p <= 20" in err


def test_summary_has_the_aggregated_table(tmp_path):
    assert _train(tmp_path, methods=["mdl", "bp"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    table = {(row["method"], tuple(row["modes"])): row for row in summary["table"]}
    assert set(table) == {("mdl", (1, 1)), ("mdl", (2, 2)), ("bp", ())}
    for (method, modes), row in table.items():
        finals = [r["final_test_accuracy"] for r in summary["runs"] if r["method"] == method and tuple(r["modes"]) == modes]
        assert row["seeds"] == 2 and row["mean_test_accuracy"] == pytest.approx(np.mean(finals))
        assert row["std_test_accuracy"] == pytest.approx(np.std(finals))


def _sigma_only_method():
    """A toy method, one table entry: fixed random patterns, only the importances sigma trained."""

    def layers(params, spec):
        def fixed(l, rows, salt):
            return jax.random.normal(jax.random.PRNGKey(100 * l + salt), (rows, spec.modes[l])) / np.sqrt(rows)
        return [mdl_jax.ModeLayer(fixed(l, a, 0), sigma, fixed(l, b, 1))
                for l, (sigma, a, b) in enumerate(zip(params["sigma"], spec.widths[:-1], spec.widths[1:]))]

    return mdl_jax.Method(
        "sigma_only", lambda key, spec, dtype: {"sigma": [jnp.ones(p, dtype) for p in spec.modes]},
        lambda spec: sum(spec.modes), mode_layers=layers,
    )


def test_a_method_registered_in_one_place_trains_through_the_cli(tmp_path):
    mdl_jax.register_method(_sigma_only_method())
    try:
        assert _train(tmp_path, methods=["sigma_only", "mdl"], epochs=3) == 0
        runs = json.loads((tmp_path / "run" / "summary.json").read_text())["runs"]
        toy = [r for r in runs if r["method"] == "sigma_only"]
        assert [r["param_count"] for r in toy] == [2, 4, 2, 4] and all(r["final_test_accuracy"] > 0 for r in toy)
        saved = mdl_jax.load_params(tmp_path / "run", "sigma_only")
        assert set(saved.params) == {"sigma"} and not np.allclose(saved.params["sigma"][0][1], 1.0)
    finally:
        mdl_jax.unregister_method("sigma_only")
    with pytest.raises(mdl_jax.ConfigError, match="unknown method 'sigma_only'"):
        mdl_jax.make_config({"methods": ["sigma_only"]})


def test_a_model_with_its_own_apply_trains_through_the_driver(tmp_path):
    """Any pure (init, apply) pair is a method: here a one-hidden-layer network with biases."""

    def init(key, spec, dtype):
        k1, k2 = jax.random.split(key)
        (n0, n1, n2) = spec.widths
        return {"w": [jax.random.normal(k1, (n0, n1), dtype) / np.sqrt(n0), jax.random.normal(k2, (n1, n2), dtype) / np.sqrt(n1)],
                "b": [jnp.zeros(n1, dtype), jnp.zeros(n2, dtype)]}

    def apply(params, x, spec, mode_mask):
        h = jnp.tanh(x @ params["w"][0] + params["b"][0])
        return h @ params["w"][1] + params["b"][1]

    mdl_jax.register_method(mdl_jax.Method("tanh_net", init, lambda s: s.widths[1] * (s.widths[0] + s.widths[2] + 1) + s.widths[2],
                                           apply=apply))
    try:
        assert _train(tmp_path, methods=["tanh_net"], epochs=4, widths=[2, 8, 2], learning_rates=[0.05]) == 0
        saved = mdl_jax.load_params(tmp_path / "run", "tanh_net")
        reported = json.loads((tmp_path / "run" / "summary.json").read_text())["runs"][0]
        data = mdl_jax.load_dataset("gaussian_mixture")
        logits = mdl_jax.apply(mdl_jax.select_run(saved.params, 0), jnp.asarray(data.test_images), spec=saved.spec)
        assert float(np.mean(np.argmax(logits, -1) == data.test_labels)) == pytest.approx(reported["final_test_accuracy"], abs=1e-6)
        assert reported["final_test_accuracy"] > 0.9 and reported["param_count"] == 42
    finally:
        mdl_jax.unregister_method("tanh_net")


def test_a_config_imports_the_module_that_registers_its_method(tmp_path, capsys):
    assert _train(tmp_path, methods=["toy_linear"], widths=[2, 2], imports=["toy_methods"]) == 0
    workdir = tmp_path / "run"
    assert json.loads((workdir / "config.json").read_text())["imports"] == ["toy_methods"]
    mdl_jax.unregister_method("toy_linear")  # a new process would not know it, nor have the module
    sys.modules.pop("toy_methods")
    config = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**config, "epochs": 3}))
    assert main(["train", "--resume", str(workdir), "--quiet"]) == 0  # imported again from the config
    assert json.loads((workdir / "summary.json").read_text())["runs"][0]["epochs"] == 3
    mdl_jax.unregister_method("toy_linear")
    assert main(["train", "--set", "imports=no_such_module", "--workdir", str(tmp_path / "x"), "--quiet"]) == 2
    assert "cannot import 'no_such_module'" in capsys.readouterr().err


def _cli(*args):
    return [sys.executable, "-m", "mdl_jax._cli", "train", *args]


def test_one_process_owns_a_workdir_and_ctrl_c_says_how_to_continue(tmp_path, capsys):
    """Real processes on one workdir: a second one started 0.3 s after the first, and a third
    (this process) once the first trains, are refused (the third naming the owner's pid).
    Ctrl-C ends the owner with one line; --resume --set epochs=N continues it, and every (run, epoch) is in
    metrics.jsonl once. Piped, the owner's progress is one plain line per epoch."""
    (tmp_path / "c.json").write_text(json.dumps({**TINY, "epochs": 100_000, "checkpoint_every": 5}))
    workdir = tmp_path / "run"
    command = _cli("--config", str(tmp_path / "c.json"), "--workdir", str(workdir), "--cpu-devices", "1")
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    time.sleep(0.3)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 300
        while first.poll() is None and second.poll() is None:  # either may win the start; the other is refused
            assert time.monotonic() < deadline
            time.sleep(0.1)
        loser, owner = (first, second) if first.poll() is not None else (second, first)
        assert loser.wait() == 2, loser.communicate()
        refused = loser.communicate()[1]
        assert re.search(r"mdl-jax: error: workdir .* (is in use by process \d+|is not empty)", refused), refused
        checkpoints = workdir / "checkpoints" / "mdl"
        deadline = time.monotonic() + 300
        while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
            assert owner.poll() is None and time.monotonic() < deadline, owner.communicate()
            time.sleep(0.2)
        assert main(["train", "--resume", str(workdir), "--quiet"]) == 2  # the third: this process
        third = capsys.readouterr().err
        assert f"is in use by process {owner.pid}" in third and "Traceback" not in third, third
        err = ""
        for _ in range(4):  # Ctrl-C, pressed again while the owner runs on (seen in full -n 2 suite runs only)
            owner.send_signal(signal.SIGINT)
            try:  # reads while it waits: a full pipe would block the owner's last line
                err += owner.communicate(timeout=30)[1]
                break
            except subprocess.TimeoutExpired:
                continue
        code = owner.wait(timeout=60)
    finally:
        first.kill()
        second.kill()
    assert code == 130 and "Traceback" not in err, err
    *progress, last = err.splitlines()
    assert re.fullmatch(rf"mdl-jax: interrupted at epoch \d+ of mdl; continue with: mdl-jax train --resume {re.escape(str(workdir))}", last), err
    assert "\r" not in err and re.findall(r"^mdl epoch (\d+)/100000: test accuracy mean", err, re.M)[:3] == ["1", "2", "3"]
    done = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert main(["train", "--resume", str(workdir), "--set", f"epochs={done + 1}", "--quiet"]) == 0
    assert json.loads((workdir / "config.json").read_text())["epochs"] == done + 1
    assert json.loads((workdir / "summary.json").read_text())["runs"][0]["epochs"] == done + 1
    pairs = [(l["run"], l["epoch"]) for l in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())]
    assert len(pairs) == len(set(pairs)) == 4 * (done + 2)
    assert not (workdir / ".lock").exists()  # released and removed on exit


def test_a_lock_left_by_a_killed_process_is_named_and_taken_over(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                               "started": "2026-01-01 00:00:00", "command": "mdl-jax train"}))
    assert _train(tmp_path) == 0  # a workdir holding only a stale lock counts as new
    err = capsys.readouterr().err
    assert f"stale lock {workdir / '.lock'} of process {int(dead.stdout)}" in err
    assert not (workdir / ".lock").exists()


def test_accuracies_are_stored_as_exact_fractions(tmp_path):
    """A float32 run's accuracies are correct counts over the examples, divided in float64."""
    assert _train(tmp_path, epochs=1) == 0
    data = mdl_jax.load_dataset("gaussian_mixture")
    n_test, seen = len(data.test_labels), len(data.train_labels) // 100 * 100
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        assert line["test_accuracy"] == round(line["test_accuracy"] * n_test) / n_test
        if line["epoch"]:
            assert line["train_accuracy"] == round(line["train_accuracy"] * seen) / seen
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [r["final_test_accuracy"] for r in summary["runs"]] == [l["test_accuracy"] for l in lines if l["epoch"] == 1]


def test_a_validation_set_is_held_out_and_selects_each_runs_epoch(tmp_path, capsys):
    """validation=N holds out the last N training examples: its loss and accuracy are reported
    every epoch (the accuracy that of the saved parameters on those examples), and summary.json
    gives each run's epoch of lowest validation loss and its test accuracy there."""
    assert _train(tmp_path, epochs=3, validation=500, modes=[[1, 2], 2], optimizer="sgd", learning_rates=[0.1]) == 0
    data = mdl_jax.load_dataset("gaussian_mixture")
    held = mdl_jax.hold_out(data, 500)
    np.testing.assert_array_equal(held.val_images, data.train_images[-500:])
    assert len(held.train_labels) == len(data.train_labels) - 500
    workdir = tmp_path / "run"
    val_loss, val_accuracy, test = (mdl_jax.load_metrics(workdir, "mdl", f) for f in ("val_loss", "val_accuracy", "test_accuracy"))
    summary = json.loads((workdir / "summary.json").read_text())
    assert [r["modes"] for r in summary["runs"]] == [[1, 2], [2, 2], [1, 2], [2, 2]]  # per-layer counts from the config
    for r, run in enumerate(summary["runs"]):
        best = int(np.argmin(val_loss[1:, r])) + 1
        assert run["best_val_epoch"] == best and run["test_accuracy_at_best_val"] == test[best, r]
    saved = mdl_jax.load_params(workdir, "mdl")
    logits = jax.vmap(lambda p, m: mdl_jax.apply(p, jnp.asarray(held.val_images), spec=saved.spec, mode_mask=m))(
        saved.params, saved.mode_mask)
    np.testing.assert_array_equal(np.sum(np.argmax(np.asarray(logits), -1) == held.val_labels, -1) / 500, val_accuracy[-1])
    with pytest.raises(mdl_jax.DataError, match="validation = 4000 must be >= 0 and leave training examples"):
        mdl_jax.hold_out(data, len(data.train_labels))
    assert _train(tmp_path, name="bad", optimizer="adam") == 2
    assert "'optimizer' must be one of adamw, sgd, got 'adam'" in capsys.readouterr().err
