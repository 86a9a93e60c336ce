"""Mode pruning during training: the letter's tau rule, exact against a restart with the new
mask, a sweep equal to its runs alone, visible in the workdir, resumed exactly."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdl_jax
from mdl_jax import analysis
from mdl_jax._cli import main
from mdl_jax._prune import prune_layer
from mdl_jax._train import compiled_sweep_fns

WIDTHS = (12, 10, 8, 3)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def test_prune_layer_masks_the_weakest_modes_below_the_cumulative_share():
    tau = jnp.asarray([0.5, 0.05, 3.0, 0.1, 0.0, 1.0])
    mask = jnp.asarray([1.0, 1.0, 1.0, 1.0, 0.0, 1.0])  # mode 4 is padding
    # active taus sorted: 0.05, 0.1, 0.5, 1.0, 3.0 (total 4.65); cumulative shares 1.1 %, 3.2 %, 14 %, 35 %, 100 %
    for share, kept in ((0.0, [1, 1, 1, 1, 0, 1]), (0.03, [1, 0, 1, 1, 0, 1]), (0.2, [0, 0, 1, 0, 0, 1]),
                        (0.5, [0, 0, 1, 0, 0, 0])):
        np.testing.assert_array_equal(prune_layer(tau, mask, share, 1), kept)
    np.testing.assert_array_equal(prune_layer(tau, mask, 0.99, 1), [0, 0, 1, 0, 0, 0])  # min_modes = 1
    np.testing.assert_array_equal(prune_layer(tau, mask, 0.99, 3), [1, 0, 1, 0, 0, 1])  # the 3 strongest stay


def _sweep(prune_taus, prune_every, **recipe):
    return mdl_jax.build_sweep(WIDTHS, "mdl", modes=[6], seeds=[0, 1], learning_rates=[0.01], prune_taus=prune_taus,
                               prune_every=prune_every, batch_size=50, dtype="float64", **recipe)


def test_a_pruned_run_equals_the_run_restarted_with_the_new_mask(small_data):
    """Pruned after epoch 2 (float64): the same numbers as training 2 epochs unpruned, applying
    the letter's rule by hand (tau from mdl_jax.analysis), and restarting with that mask."""
    pruned = _sweep([0.3], 2, prune_until=2)
    run = jax.tree.map(lambda a: a[:1], pruned.runs)
    whole = mdl_jax.train(pruned.recipe, run, small_data, epochs=4)
    plain = pruned.recipe._replace(prune_every=0)
    early = mdl_jax.train(plain, run, small_data, epochs=2).state
    params = mdl_jax.select_run(early.params, 0)
    mask = []
    for layer in mdl_jax.mode_layers(params, plain.spec):
        tau = np.asarray(analysis.mode_importance(layer))
        order = np.argsort(tau)
        share = np.cumsum(tau[order]) / tau.sum()
        removed = order[(share < 0.3) & (np.arange(len(tau)) < len(tau) - 1)]
        mask.append(np.isin(np.arange(len(tau)), removed, invert=True).astype(np.float64))
    assert 0 < sum(m.sum() for m in mask) < 18  # the rule removes some modes, not all
    mask = tuple(jnp.asarray(m)[None] for m in mask)
    zero = lambda tree: mdl_jax.zero_inactive_modes(tree, plain.spec, tuple(m[0] for m in mask))
    adam = early.opt_state[0]
    moments = jax.tree.map(lambda a: a[0], (adam.mu, adam.nu))
    restart = early._replace(
        params=jax.tree.map(lambda a: a[None], zero(params)),
        opt_state=(adam._replace(mu=jax.tree.map(lambda a: a[None], zero(moments[0])),
                                 nu=jax.tree.map(lambda a: a[None], zero(moments[1]))), *early.opt_state[1:]),
        mode_mask=mask)
    rest = mdl_jax.train(plain, run._replace(mode_mask=mask), small_data, epochs=2, state=restart, start_epoch=2)
    chex.assert_trees_all_close(rest.state.params, whole.state.params, rtol=1e-12, atol=1e-15)
    chex.assert_trees_all_equal(rest.state.mode_mask, whole.state.mode_mask)
    np.testing.assert_array_equal(whole.metrics.active_modes[:, 0], [[6, 6, 6]] + [[int(m.sum()) for m in mask]] * 3)


def test_a_pruning_sweep_is_one_program_and_equals_each_run_alone(small_data):
    sweep = _sweep([0.0, 0.1, 0.3], 1)
    together = mdl_jax.train(sweep.recipe, sweep.runs, small_data, epochs=3)
    # the masks changed after every epoch, and nothing recompiled: one executable, or two where the
    # first epoch's input layout (the initial state) differs from the later ones' (e.g. on 2 CPU devices)
    assert compiled_sweep_fns(sweep.recipe, 3)[1]._cache_size() <= 2 and np.all(np.diff(together.metrics.active_modes[:, 2].sum(-1)) < 0)
    active = together.metrics.active_modes  # (epochs, runs, layers)
    assert np.all(np.diff(active, axis=0) <= 0) and np.all(active[:, [0, 3]] == 6)  # tau 0 prunes nothing
    assert active[-1, 2].sum() < active[-1, 1].sum() < 18  # a larger share prunes more
    for run in (2, 4):  # other threshold, other seed
        alone = mdl_jax.train(sweep.recipe, jax.tree.map(lambda a: a[run:run + 1], sweep.runs), small_data, epochs=3)
        chex.assert_trees_all_close(mdl_jax.select_run(alone.state.params, 0), mdl_jax.select_run(together.state.params, run),
                                    rtol=1e-10, atol=1e-13)
        np.testing.assert_array_equal(alone.metrics.active_modes[:, 0], active[:, run])
    params = mdl_jax.select_run(together.state.params, 2)  # pruned modes are exact zeros
    for l, mask in enumerate(together.state.mode_mask):
        assert not np.any(np.asarray(params["sigma"][l])[np.asarray(mask[2]) == 0])


TINY = {"dataset": "gaussian_mixture", "widths": [2, 8, 8, 2], "modes": [6], "seeds": [0, 1], "epochs": 4,
        "learning_rates": [0.03], "methods": ["mdl"], "prune_every": 1, "prune_tau": [0.0, 0.3]}


class _Crash(Exception):
    pass


def test_pruning_shows_in_the_workdir_and_resumes_exactly(tmp_path, capsys):
    config = mdl_jax.make_config(TINY)
    mdl_jax.train_and_evaluate(config, tmp_path / "full", progress=False)

    def crash(method, epoch):
        if (method, epoch) == ("mdl", 2):
            raise _Crash

    with pytest.raises(_Crash):
        mdl_jax.train_and_evaluate(config, tmp_path / "killed", progress=False, on_checkpoint=crash)
    assert main(["train", "--resume", str(tmp_path / "killed"), "--quiet"]) == 0
    assert (tmp_path / "full" / "metrics.jsonl").read_text() == (tmp_path / "killed" / "metrics.jsonl").read_text()
    lines = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    mdl = [l for l in lines if l["method"] == "mdl" and l["epoch"] > 0]
    assert {l["prune_tau"] for l in mdl} == {0.0, 0.3} and all(len(l["active_modes"]) == 3 for l in mdl)
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    for run in (r for r in summary["runs"] if r["method"] == "mdl"):
        last = [l for l in mdl if l["seed"] == run["seed"] and l["prune_tau"] == run["prune_tau"]][-1]
        assert run["final_modes"] == last["active_modes"]
        assert run["final_param_count"] == mdl_jax.param_count(mdl_jax.make_spec(TINY["widths"], run["final_modes"], "mdl"))
        assert (run["final_modes"] == [6, 6, 6]) == (run["prune_tau"] == 0.0)
    saved = mdl_jax.load_params(tmp_path / "full", "mdl")  # final masks, pruned modes zero: the run evaluates to its number
    data = mdl_jax.load_dataset("gaussian_mixture")
    for run, reported in enumerate(r for r in summary["runs"] if r["method"] == "mdl"):
        logits = mdl_jax.apply(mdl_jax.select_run(saved.params, run), jnp.asarray(data.test_images), spec=saved.spec)
        assert float(np.mean(np.argmax(logits, -1) == data.test_labels)) == pytest.approx(reported["final_test_accuracy"], abs=1e-6)
        assert [int(m[run].sum()) for m in saved.mode_mask] == reported["final_modes"]
    table = {(r["method"], r.get("prune_tau")): r for r in summary["table"]}
    assert table[("mdl", 0.3)]["mean_final_param_count"] < table[("mdl", 0.0)]["param_count"]


@pytest.mark.parametrize("values, message", [
    ({"prune_every": 1, "prune_tau": [1.0]}, r"prune_tau is a share of a layer's tau in \[0, 1\), got 1.0"),
    ({"prune_every": 1, "methods": ["mdl_1l1p"]}, "shares its patterns between layers"),
    ({"prune_every": 1, "min_modes": 0}, "min_modes >= 1"),
    ({"prune_until": 0}, "'prune_until' must be >= 1"),
])
def test_bad_pruning_settings_are_refused(values, message):
    with pytest.raises(mdl_jax.ConfigError, match=message):
        mdl_jax.make_config(values)
