"""Scale-out and resilience: sharded == single-device, chunked == whole, resume after SIGKILL,
divergence containment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

import mdl_jax
from conftest import random_dataset

WIDTHS = (12, 10, 8, 3)
ROOT = Path(__file__).parents[1]



SHARD_WORKER = """
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[1])
import numpy as np, mdl_jax
from conftest import random_dataset

data = random_dataset()
out = {}
for name, seeds, modes in (("even", range(8), [2, 4]), ("uneven", range(11), [1, 4])):
    sweep = mdl_jax.build_sweep((12, 10, 8, 3), "mdl", modes=modes, seeds=seeds, batch_size=50, dtype="float64")
    one = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=2, devices=jax.devices()[:1])
    eight = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=2, devices=jax.devices())
    diffs = [float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(one.state), jax.tree.leaves(eight.state))]
    from mdl_jax._layout import plan_layout
    layout = plan_layout(np.asarray(sweep.runs.key), run_bytes=1, data_bytes=0)
    out[name + "_layout"] = [len(layout.mesh.devices), layout.padded_runs]
    out[name] = {"runs": len(sweep.infos), "max_diff": max(diffs),
                 "acc_diff": float(np.abs(one.metrics.test_accuracy - eight.metrics.test_accuracy).max())}
out["devices"] = len(jax.devices())
print(json.dumps(out))
"""


def test_shard_over_8_devices_equals_one_device():
    """8 simulated CPU devices (in a subprocess: the device count is fixed at start-up)."""
    result = subprocess.run(
        [sys.executable, "-c", SHARD_WORKER, str(ROOT / "tests")], capture_output=True, text=True, timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    # 11 seed groups: 6 devices carry 2 each, the twelfth slot is a padded copy, then dropped
    assert out["even"]["runs"] == 16 and out["uneven"]["runs"] == 22
    assert out["even_layout"] == [8, 16] and out["uneven_layout"] == [6, 24]
    for case in ("even", "uneven"):
        assert out[case]["max_diff"] < 1e-10 and out[case]["acc_diff"] == 0.0


def test_chunked_sweep_equals_one_chunk():
    data = random_dataset()
    with jax.enable_x64(True):
        sweep = mdl_jax.build_sweep(WIDTHS, "mdl", modes=[2, 3], seeds=range(5), batch_size=50, dtype="float64")
        whole = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=2)
        chunked = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=2, max_runs_per_chunk=4)  # 3 chunks of 2 groups
    for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(chunked.state)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(whole.metrics.test_accuracy, chunked.metrics.test_accuracy)


def test_programs_by_mode_count_give_the_padded_sweeps_numbers():
    """A sweep split into programs by mode count (``max_padding``) trains every run as the
    one padded program does; resumed from a checkpointed state too, and with svd, whose
    initial modes depend on the padded rank."""
    data = random_dataset()
    with jax.enable_x64(True):
        for method, modes in (("mdl", [2, 6]), ("svd", [1, 3])):
            sweep = mdl_jax.build_sweep(WIDTHS, method, modes=modes, seeds=range(2), batch_size=50, dtype="float64")
            padded = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=2)
            split = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=1, max_padding=0.0)
            split = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=1, state=split.state, start_epoch=1, max_padding=0.0)
            # float rounding only: sums over fewer padded zeros (svd's penalties) in another order (the
            # CPU's vector width decides it), grown by Adam over 2 epochs: 4e-8 relative (5e-10
            # absolute) seen on an AVX2 CPU, within 1e-8 on AVX-512 ones
            chex.assert_trees_all_close(padded.state, split.state, rtol=1e-6, atol=1e-9)
            np.testing.assert_array_equal(padded.metrics.test_accuracy[1], split.metrics.test_accuracy[0])


def test_program_plan_bounds_padding_with_the_fewest_programs():
    from mdl_jax._layout import plan_programs

    widths = (784, 100, 100, 10)
    modes = np.asarray([[p] * 3 for _ in range(5) for p in (10, 20, 30, 40, 50)])  # the benchmark's 25-run sweep
    weight = np.asarray(widths[:-1]) + np.asarray(widths[1:])

    def padding(plan):
        executed = sum(len(index) * (modes[index].max(0) @ weight) for index in plan)
        return 1 - (modes @ weight).sum() / executed

    assert len(plan_programs(modes, widths, max_padding=0.45)) == 1  # one program pads 40 %
    for bound, programs in ((0.2, 3), (0.1, 4), (0.0, 5)):
        plan = plan_programs(modes, widths, max_padding=bound)
        assert len(plan) == programs and padding(plan) <= bound + 1e-12
        assert sorted(np.concatenate(plan).tolist()) == list(range(25))
    assert all(len(np.unique(modes[index], axis=0)) == 1 for index in plan_programs(modes, widths, max_padding=0.0))
    assert padding(plan_programs(modes, widths, max_padding=0.1)) == pytest.approx(1 - 750 / 800)  # 40 padded to 50


def test_chunk_plan_follows_memory_estimate_and_limits():
    from mdl_jax._layout import plan_layout

    keys = np.asarray([jax.random.PRNGKey(s) for s in range(10) for _ in range(3)])  # 10 groups of 3
    devices = jax.devices()[:1]
    whole = plan_layout(keys, run_bytes=1000, data_bytes=0, devices=devices)
    assert (whole.group_size, whole.num_chunks, whole.groups_per_chunk) == (3, 1, 10)
    limited = plan_layout(keys, run_bytes=1000, data_bytes=0, devices=devices, max_runs_per_chunk=7)
    assert (limited.groups_per_chunk, limited.num_chunks, limited.padded_runs) == (2, 5, 30)
    huge = plan_layout(keys, run_bytes=10**15, data_bytes=0, devices=devices)  # memory for < 1 run
    assert huge.groups_per_chunk == 1 and huge.num_chunks == 10
    assert mdl_jax.run_footprint_bytes(mdl_jax.build_sweep((784, 100, 10), "mdl", modes=[30]).recipe) > 4 * 30 * 900


def test_nan_injected_run_is_frozen_and_the_others_untouched():
    data = random_dataset()
    sweep = mdl_jax.build_sweep(WIDTHS, "mdl", modes=[2, 4], seeds=range(2), batch_size=50)
    start = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=1).state
    poisoned = jax.tree.map(np.copy, start)
    poisoned.params["sigma"][0][2, 0] = np.nan  # run 2: its very next loss is nan
    clean = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=2, state=start, start_epoch=1)
    hit = mdl_jax.train(sweep.recipe, sweep.runs, data, epochs=2, state=poisoned, start_epoch=1)
    assert hit.metrics.diverged_epoch[-1].tolist() == [-1, -1, 1, -1]
    assert mdl_jax.DIVERGENCE_CAUSES[int(hit.metrics.divergence_cause[-1, 2])] == "loss became nan"
    for name in ("xi_hat", "xi"):  # frozen: run 2 never moved
        np.testing.assert_array_equal(hit.state.params[name][0][2], poisoned.params[name][0][2])
    for run in (0, 1, 3):
        for a, b in zip(jax.tree.leaves(mdl_jax.select_run(clean.state, run)), jax.tree.leaves(mdl_jax.select_run(hit.state, run))):
            np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(hit.state.opt_state))


def test_diverging_runs_are_marked_and_an_all_diverged_sweep_says_so(tmp_path, capsys):
    from mdl_jax._cli import main

    def train(learning_rates, workdir):  # the command line, in this process: its exit code and its output
        code = main(["train", "--set", "dataset=gaussian_mixture", "--set", "widths=[2,6,2]", "--set", "modes=[3]",
                     "--set", f"learning_rates={learning_rates}", "--set", "epochs=2", "--workdir", str(tmp_path / workdir), "--quiet"])
        return code, capsys.readouterr()

    code, mixed = train("[0.03,1e12]", "mixed")
    assert code == 0, mixed.err[-2000:]
    runs = json.loads((tmp_path / "mixed" / "summary.json").read_text())["runs"]
    assert [(r["learning_rate"], r["diverged"]) for r in runs] == [(0.03, False), (1e12, True)]
    assert runs[1]["diverged_epoch"] == 1 and runs[1]["divergence_cause"] == "loss became nan"
    assert runs[0]["final_test_accuracy"] > 0.9 and "DIVERGED at epoch 1" in mixed.out
    lines = [json.loads(line) for line in (tmp_path / "mixed" / "metrics.jsonl").read_text().splitlines()]
    assert any(line.get("train_loss", 0.0) is None for line in lines)  # strict JSON: null, not NaN
    assert "NaN" not in (tmp_path / "mixed" / "metrics.jsonl").read_text()
    code, absurd = train("[1e12]", "absurd")
    assert code == 3
    assert "all 1 runs diverged" in absurd.err and "lower the learning rate" in absurd.err
    assert "Traceback" not in absurd.err
    assert (tmp_path / "absurd" / "summary.json").is_file()  # nothing computed is lost


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_one_sharded_sweep_like_one_process(tmp_path):
    """Two JAX processes on this machine (a localhost coordinator, CPU collectives over gloo)
    train one sweep through `mdl-jax train --distributed`; the workdir, written once by
    process 0, holds the numbers of the single-process sweep."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"dataset": "gaussian_mixture", "widths": [2, 6, 2], "modes": [1, 2],
                                  "seeds": [0, 1, 2, 3], "epochs": 2, "learning_rates": [0.03]}))
    port = _free_port()
    args = ["train", "--config", str(config), "--quiet"]
    base = [sys.executable, "-m", "mdl_jax._cli", *args]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    workers = [subprocess.Popen(base + ["--workdir", str(tmp_path / "two"), "--distributed", "--coordinator",
                                        f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
               for i in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    from mdl_jax._cli import main

    assert main(args + ["--workdir", str(tmp_path / "one")]) == 0  # the single process: this one
    lines = lambda d: [json.loads(l) for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    assert len(lines("two")) == len(lines("one")) == 8 * 3  # every run's epochs 0-2, written once
    for a, b in zip(lines("two"), lines("one")):
        assert a.keys() == b.keys()
        assert all(a[k] == (pytest.approx(b[k], rel=1e-5) if isinstance(b[k], float) else b[k]) for k in a)
    two, single = (mdl_jax.load_params(tmp_path / d, "mdl").params for d in ("two", "one"))
    for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(single)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    tables = [json.loads((tmp_path / d / "summary.json").read_text())["table"] for d in ("two", "one")]
    for a, b in zip(*tables):
        assert a["mean_test_accuracy"] == pytest.approx(b["mean_test_accuracy"], rel=1e-5) and a["seeds"] == b["seeds"] == 4
