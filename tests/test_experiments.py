"""Every figure script runs end to end on a tiny configuration and writes what it promises."""

import dataclasses
import json
import re

import jax
import numpy as np
import pytest

import mdl_jax
from mdl_jax import ConfigError, online

from experiments import common, fig4, schedule


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def test_fig4_tiny(tmp_path, capsys):
    settings = fig4.Fig4Settings(panel_a_d=(40, 60), panel_b_d=60, panel_b_alpha=(0.5, 1.0), hidden=4, t_max=30.0,
                                 n_times=8, seeds=2, n_test=1000, plateau_teachers=7, plateau_n_times=8)
    results = fig4.run(settings, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"fig4.png", "fig4.pdf", "results.json", "config.json", "d40.npz", "d60.npz",
                                                    "plateau_ode.npz"}
    assert np.load(tmp_path / "d40.npz")["1_eps_ode"].dtype == np.float64  # the ODE in the settings' dtype, whatever thread solved it
    progress = capsys.readouterr().out
    assert "fig4: d = 40 (1/2), alpha = 1, 5 teachers x 2 seeds" in progress and "fig4: d = 60 done in" in progress
    again = fig4.run(settings, tmp_path, plot=False)  # as a resumed run: every dimension is read back, not recomputed
    assert capsys.readouterr().out.count("reusing") == 3
    for config in results["configurations"][2:]:  # panel (b): its simulated teachers are the ODE-only study's first five
        many = results["plateau_ode"][f"{config['alpha']:g}"]
        assert many["teachers"] == 7 and many["shares"][:5].tolist() == pytest.approx(config["plateau_share"])
        assert 0 <= many["no_plateau_fraction"] <= 1 and many["share_min"] <= many["share_median"] <= many["share_max"]
    assert again["configurations"][3]["eps_sim_mean"].tolist() == results["configurations"][3]["eps_sim_mean"].tolist()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["configurations"]) == 4
    assert saved["max_rel_gap_theory_vs_simulation"] == results["max_rel_gap_theory_vs_simulation"]
    assert results["median_rel_gap_theory_vs_simulation"] < 0.1  # short horizon, moderate d: typical agreement
    assert saved["teachers_per_alpha"] == 5 and set(saved["plateau"]) == {"0.5", "1"}
    assert set(saved["gap_vs_seed_stderr"]) == {"d=40,alpha=1", "d=60,alpha=1", "d=60,alpha=0.5"}
    for config in saved["configurations"]:
        assert len(config["eps_ode"]) == len(config["eps_sim_mean"]) == 5 and len(config["eps_ode"][0]) == 8
        assert len(config["M_final"]) == 4 and len(config["M_final"][0]) == 4  # m = k
        assert all(0 <= share <= 1 for share in config["plateau_share"])
    text = fig4.summary(saved)  # what the command prints at the end: lines, not a Python dict
    assert "{" not in text and re.search(r"^  alpha =  0.5: median \d\.\d\d \(min", text, re.M), text
    assert "over 7 teachers (ODE), from the onset of learning:" in text and "no plateau in" in text
    assert f"largest {saved['max_rel_gap_theory_vs_simulation']:.0%} (d = " in text
    args = common.parser(fig4.__doc__).parse_args(["--quick", "--set", "dtype=bfloat16"])
    with pytest.raises(SystemExit, match="error: dtype must be float32 or float64, got 'bfloat16'"):  # as the command line says it
        common.settings_from(args, fig4.Fig4Settings(), fig4.QUICK)
    with pytest.raises(ConfigError, match="simulation_dtype must be float32 or float64, got 'float16'"):
        dataclasses.replace(fig4.QUICK, simulation_dtype="float16")


def test_schedule_tiny(tmp_path, capsys):
    """The schedule study end to end at m = k = 2: the design in stored rounds, three schedules
    through the ODE and SGD, read back whole by a second run; its letter schedule (eta = 1 in
    every bin) simulates exactly as the plain constant rate does."""
    # the design's program is that of test_online's designed schedule (m = k = 2, two teachers, five bins, 4096 steps)
    settings = schedule.ScheduleSettings(alpha=2.0, hidden=2, eta=1.0, horizon=10.0, bins=5, teachers=3, design_teachers=2,
                                         iterations=2, round_iterations=1, learning_rate=0.1, rtol=1e-6, atol=1e-9, max_steps=4096,
                                         seeds=2, n_test=1000, n_times=8, plateau_n_times=16)
    results = schedule.run(settings, tmp_path)
    saved = _written(tmp_path, "schedule")
    assert {"design_round0.npz", "design_round1.npz", "curves_designed.npz"} <= {p.name for p in tmp_path.iterdir()}
    assert len(saved["design_history"]) == 2 and set(saved["gain"]) == {"design", "held_out"}
    assert set(saved["learned_by_horizon"]) == set(schedule.SCHEDULES)
    assert set(saved["verdict"]) == {"beats_constant_design", "beats_constant_held_out", "shortens_plateaus", "gradient_agrees"}
    assert saved["gradient_check"]["agrees"] and saved["gradient_check"]["ad"] == pytest.approx(saved["gradient_check"]["fd"], rel=0.05)
    per = results["schedules"]
    assert per["letter"]["eta"].tolist() == [1.0] * 5 and np.ptp(per["designed"]["eta"]) > 0
    assert per["designed"]["eps_ode_T"][0] < per["constant"]["eps_ode_T"][0]  # what it was designed for, in the ODE
    assert set(np.asarray(results["edges"]).tolist()) <= set(np.asarray(results["ts"]).tolist())
    capsys.readouterr()
    again = schedule.run(settings, tmp_path, plot=False)
    assert capsys.readouterr().out.count("reusing") == 1 + 2 + 3  # the gradient check, every design round, each schedule
    assert again["gain"] == results["gain"]
    (plain,) = online.theory_vs_simulation([(100, 2.0)], results["ts"], hidden=2, eta=1.0, seeds=2, n_test=1000,
                                                   teachers=3, redraw_above=0.01, fixed_test=True, dtype=np.float64,
                                                   simulation_dtype=np.float32)
    geomean = np.exp(np.log(plain.eps_sim).mean(1))
    np.testing.assert_allclose(per["letter"]["eps_sim_geomean"], geomean, rtol=1e-5)
    np.testing.assert_allclose(per["letter"]["eps_ode"], plain.eps_ode, rtol=1e-5)  # the solver steps onto the edges: its tolerance
    text = schedule.summary(saved)
    assert "{" not in text and "held_out teachers (1): eps_g(T) designed / best constant: ODE" in text


def _mnist_slice(mnist, n_train=6000, n_test=2000):
    return mnist._replace(train_images=mnist.train_images[:n_train], train_labels=mnist.train_labels[:n_train],
                          test_images=mnist.test_images[:n_test], test_labels=mnist.test_labels[:n_test])


def _written(out, name):
    assert {f"{name}.png", f"{name}.pdf", "results.json", "config.json"} <= {p.name for p in out.iterdir()}
    return json.loads((out / "results.json").read_text())


def test_fig1_tiny(tmp_path):
    from experiments import fig1

    results = fig1.run(fig1.Fig1Settings(seeds=2, epochs=3, n_train=4000, n_test=1000, batch_size=50, lr=1e-2), tmp_path)
    saved = _written(tmp_path, "fig1")
    assert len(saved["test_accuracy"]) == 2 and max(saved["test_accuracy"]) > 0.6
    assert set(saved["points"]) >= {"x", "projected", "scaled", "remapped", "hidden", "correct"}
    assert results["correct_fraction_shown"] > 0.6


@pytest.mark.mnist
def test_fig2_tiny(tmp_path, mnist):
    from experiments import fig2

    settings = fig2.Fig2Settings(seeds=2, epochs=2, modes=(5, 30), trajectory_modes=(30,), widths=(100,),
                                 width_modes=(5, 30), overlap_dim=3, last_epochs=2)  # (c) at N = 100: panel (b)'s programs
    results = fig2.run(settings, _mnist_slice(mnist, n_train=3000, n_test=1000), tmp_path)
    saved = _written(tmp_path, "fig2")
    assert set(saved["b_accuracy_vs_p"]["mdl"]) == {"5", "30"}
    assert saved["b_accuracy_vs_p"]["mdl"]["30"]["param_fraction"] == pytest.approx(35_910 / 89_400)
    for baseline in ("bp", "bp_fanin"):  # accuracies are means over each run's last two epochs
        last = mdl_jax.load_metrics(tmp_path / "runs" / f"784-100-100-10_{baseline}", baseline, "test_accuracy")[-2:]
        assert saved["b_accuracy_vs_p"][baseline]["mean"] == pytest.approx(last.mean())
        assert set(saved["least_modes"][baseline]) == {"100"}
    assert set(saved["least_modes_fit"]) == {"bp", "bp_fanin"}  # one width: no fit yet
    assert saved["least_modes_fit"]["bp"] is None
    assert len(saved["d_dispersion_by_layer"]["mean"]) == 4
    assert set(saved["overlap"]) == {"mdl", "bp", "bp_fanin"} and len(saved["overlap"]["mdl"]["mean"]) == 5
    assert all(0 <= o <= 1 + 1e-6 for o in saved["overlap"]["bp_fanin"]["mean"])
    with pytest.raises(mdl_jax.ConfigError, match="last_epochs=3"):
        dataclasses.replace(settings, last_epochs=3)
    with pytest.raises(mdl_jax.ConfigError, match="panels='cx': unknown 'x'"):
        dataclasses.replace(settings, panels="cx")
    only_c = {k: saved[k] for k in ("least_modes", "least_modes_fit", "c_accuracy_by_p")}  # e.g. --set panels='"c"'
    fig2.draw({**only_c, "settings": {**saved["settings"], "panels": "c"}})
    assert results["wall_time_s"] > 0


@pytest.mark.mnist
def test_fig3_tiny(tmp_path, mnist):
    from experiments import fig3

    results = fig3.run(fig3.Fig3Settings(seeds=2, epochs=1, modes=20, fractions=5, random_draws=3), _mnist_slice(mnist), tmp_path)
    saved = _written(tmp_path, "fig3")
    for layer in ("0", "1", "2"):
        removal = saved["a_removal"][layer]
        assert len(removal["weakest_first"]["mean"]) == 5
        assert removal["weakest_first"]["mean"][0] == pytest.approx(results["test_accuracy"]["mean"], abs=1e-6)
        assert saved["b_spectrum"][layer]["fit"]["break_rank"] > 1
        sigma_first = removal["smallest_sigma_first"]["mean"]  # same start, and nothing left at the end
        assert sigma_first[0] == pytest.approx(removal["weakest_first"]["mean"][0]) and sigma_first[-1] == pytest.approx(removal["weakest_first"]["mean"][-1])
    assert saved["tau_fixed_split"] == saved["b_spectrum"]["0"]["fixed_split"] and saved["tau_fixed_split"]["split"] == 10
    assert saved["tau_fitted_break"] == saved["b_spectrum"]["0"]["fit"]


@pytest.mark.mnist
def test_effective_model_tiny(tmp_path, mnist, capsys):
    from experiments import effective_model as em

    settings = em.EffectiveModelSettings(
        networks=2, epochs_under=1, epochs_over=1, epochs_shallow=1, samples_per_network=25, threshold_under=0.0,
        threshold_over=0.0, threshold_shallow=0.0, score_images=500, hidden_permutations=2, bm_iterations=5, bm_burn_in=2,
        mcmc_iterations=10, mcmc_chains=16, verify_chains=8, verify_sweeps=6, references=2, field_step=0.5,
        check_references=1, shallow_references=5, shallow_check_references=5, check_chains=4, check_sweeps=4,
    )
    # 500 training images: the under- and over-parametrised cases (the latter trains on 500) are then one program
    data = _mnist_slice(mnist, n_train=500, n_test=500)
    with jax.enable_x64(False):
        em.run(settings, data, tmp_path)
        saved = _written(tmp_path, "effective_model")
        assert set(saved["max_entropy"]) == {"LB", "ITR", "RB", "FULL"}
        assert set(saved["mean_abs_J"]) == set(saved["mean_abs_h"]) == {"LB", "ITR", "RB"}
        assert 0 < saved["max_entropy"]["ITR"] <= 0.6932
        under = saved["cases"]["under"]
        assert under["kept_samples"] == 2 * 25 and under["LB"]["samples"] == 2 * under["kept_samples"]  # relabelled copies
        shallow = saved["cases"]["shallow"]["FULL"]
        assert shallow["fit"] == "mcmc" and shallow["checked_references"] == 5 and len(shallow["metropolis_curves"]) == 5
        assert "curves" in shallow["comparison"] and shallow["comparison"]["fit"] == "bp"
        assert under["LB"]["comparison"]["fit"] == "bp" and "curves" not in under["LB"]["comparison"]
        authors, faithful = saved["shallow_authors_procedure"], saved["shallow_faithful"]
        assert authors["bp_jump"] == shallow["comparison"]["max_distance_jump"] >= 0
        assert authors["chain_loop"] == shallow["comparison"]["metropolis_hysteresis"]
        assert 0 <= authors["reversed_state_fraction"] <= 1 and 0 <= authors["d_after_jump"] <= 1
        assert authors["passes"] == (authors["bp_jump"] >= 0.3 and authors["chain_loop"] >= 0.3)
        assert faithful["chain_loop_max"] == shallow["metropolis_hysteresis"] and faithful["chain_references"] == 5
        deep = [saved["cases"][c][part]["metropolis_hysteresis"] for c in ("under", "over") for part in ("LB", "ITR", "RB", "FULL")]
        assert faithful["deep_chain_loop_max"] == max(deep)
        assert faithful["verdict"] in ("reproduced", "not reproduced by a fit that matches the data",
                                       "undecided: the fit does not match the data")
        for case in ("under", "over", "shallow"):  # the networks are runs of the figure's workdir
            assert (tmp_path / f"samples_{case}.npz").exists()
            assert (tmp_path / "runs" / f"binary_{case}" / "summary.json").is_file()
        capsys.readouterr()
        pca = em.binary.pca_project(data)
        drawn = em._samples("under", (20, 15, 15, 10), None, 1, 0.0, pca, pca, settings, tmp_path)
        assert "reusing" in capsys.readouterr().out and len(drawn["samples"]) == under["kept_samples"]
    for bad, message in (({"fit": "exact"}, "fit='exact' is not a fit"), ({"compare": "mcmc"}, "compare='mcmc'"),
                         ({"bp_start": "mean"}, "bp_start='mean'"), ({"bm_burn_in": 5}, "bm_burn_in=5")):
        with pytest.raises(mdl_jax.ConfigError, match=message):  # refused with the settings, before any training
            dataclasses.replace(settings, **bad)


def test_effective_model_fits_agree_on_weakly_coupled_spins():
    """On samples of a weakly coupled model, where BP is accurate, the script's two fits (BP and
    Metropolis moments) agree, and both pass their own Metropolis check."""
    from experiments import effective_model as em
    from mdl_jax import landscape

    with jax.enable_x64(False):
        truth = landscape.random_ising(jax.random.PRNGKey(0), 12, coupling=0.15, field=0.3, dtype=jax.numpy.float32)
        samples = landscape.metropolis(truth, jax.random.PRNGKey(1), chains=64, sweeps=300, burn_in=100, thin=2)
        settings = em.EffectiveModelSettings(bm_iterations=200, mcmc_iterations=300, mcmc_chains=256, verify_chains=64,
                                             verify_sweeps=200, field_step=0.25, references=2, check_references=1)
        data = landscape.connected_moments(samples)
        fits = {m: landscape.fit_and_examine(samples, m, jax.random.PRNGKey(2), data=data, fit_options=settings.fit_options(m),
                                             examine_options=settings.examine_options(m, shallow=False)) for m in landscape.FITS}
    for fit in fits.values():
        assert fit["metropolis_correlation_error"] < fit["independent_correlation_error"]
        assert fit["hysteresis"] < 1e-3 and len(fit["curves"]) == 2
    assert abs(fits["bp"]["max_entropy"] - fits["mcmc"]["max_entropy"]) < 0.01
    assert abs(fits["bp"]["mean_abs_J"] - fits["mcmc"]["mean_abs_J"]) < 0.3 * fits["bp"]["mean_abs_J"]


# Runs a figure script and SIGKILLs itself once the first checkpoint of its first grid is on disk.
KILLED_FIGURE = """
import functools, os, signal, sys
import mdl_jax
from experiments import fig1
kill = lambda method, epoch: os.kill(os.getpid(), signal.SIGKILL)
mdl_jax.train_and_evaluate = functools.partial(mdl_jax.train_and_evaluate, on_checkpoint=kill)
fig1.main(sys.argv[1:])
"""


def test_a_killed_figure_run_resumes_to_the_uninterrupted_results(tmp_path, capsys):
    """The run killed by SIGKILL is a process of its own; the uninterrupted run, the refused
    restart, the resumed run and the finished one run here, as the same command line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from experiments import fig1

    args = ["--set", "seeds=2", "--set", "epochs=3", "--set", "n_train=2000", "--set", "n_test=500",
            "--set", "batch_size=50", "--set", "lr=0.01", "--set", "shown_points=50"]

    def run(out, *extra):  # the command, in this process (as a subprocess would run it: JAX's default float32)
        with jax.enable_x64(False):
            fig1.main([*args, "--out", str(tmp_path / out), *extra])
        return capsys.readouterr()

    run("full")
    # this process's CPU devices (the command would take one per core), so that it runs this process's programs:
    # a sweep sharded otherwise is another program, equal only to rounding
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(jax.local_device_count())}
    killed = subprocess.run([sys.executable, "-c", KILLED_FIGURE, *args, "--out", str(tmp_path / "killed")], capture_output=True,
                            text=True, timeout=600, cwd=Path(__file__).parents[1], env=env)
    assert killed.returncode == -9 and not (tmp_path / "killed" / "results.json").exists(), killed.stderr[-3000:]
    with pytest.raises(SystemExit, match="pass --resume"):
        run("killed")
    resumed = run("killed", "--resume").err
    assert "mdl epoch 1/3" not in resumed and "mdl epoch 3/3" in resumed
    numbers = lambda d: {k: v for k, v in json.loads((tmp_path / d / "results.json").read_text()).items() if k != "wall_time_s"}
    assert numbers("full") == numbers("killed")
    grid = tmp_path / "killed" / "runs" / "mdl"
    before = {p: p.read_bytes() for p in (grid / "metrics.jsonl", grid / "summary.json", grid / "params" / "mdl.npz")}
    assert " epoch " not in run("killed").err  # a finished figure run only redraws
    assert {p: p.read_bytes() for p in before} == before and numbers("killed") == numbers("full")


def test_beyond_mlp_settings_name_an_unknown_family():
    from experiments.configs.beyond_mlp import BeyondMLPSettings

    with pytest.raises(mdl_jax.ConfigError, match=r"families: unknown \['mlp'\]; choose from cnn, vit"):
        BeyondMLPSettings(families=("cnn", "mlp"))


@pytest.mark.mnist
def test_beyond_mlp_tiny(tmp_path, mnist):
    from experiments import beyond_mlp
    from experiments.configs.beyond_mlp import BeyondMLPSettings

    settings = BeyondMLPSettings(families=("cnn",), seeds=2, epochs=1, n_train=1000, cnn_modes=(2, 4), analysis_images=200,
                                 fractions=3, random_draws=2)  # the ViT: test_nn.py
    with jax.enable_x64(False):  # float32 models, as in a real run
        results = beyond_mlp.run(settings, _mnist_slice(mnist, n_train=1000, n_test=500), tmp_path)
    saved = _written(tmp_path, "beyond_mlp")
    assert "vit" not in saved
    for family, layers in (("cnn", 3),):
        r = saved[family]
        assert set(r["modes"]) == {"2", "4"} and r["plain"]["params"] > r["modes"]["4"]["params"] > r["modes"]["2"]["params"]
        assert len(r["tau_by_rank"]) == 4 and r["removal"]["weakest_first"]["mean"][0] == pytest.approx(r["removal"]["random"]["mean"][0])
        assert (tmp_path / "runs" / f"{family}_modes" / "summary.json").is_file()
        spec = mdl_jax.load_params(tmp_path / "runs" / f"{family}_modes", f"{family}_modes").spec
        assert len(spec.modes) == layers
    assert results["cnn"]["plain"]["params"] == 20490


def test_a_figure_run_checks_its_data_before_writing_and_stops_in_one_line(tmp_path, capsys):
    from experiments import fig3
    from test_data import make_folder

    make_folder(tmp_path / "small_images", side=8)  # valid IDX files, not 28 x 28
    out = tmp_path / "fig3"
    for data_dir, message in ((tmp_path / "small_images", "fig3 trains 784-...-10 networks on MNIST, but the data have 64 features"),
                              (tmp_path / "missing", "does not exist")):
        with pytest.raises(SystemExit, match="^error: ") as stop:
            fig3.main(["--quick", "--out", str(out), "--data-dir", str(data_dir)])
        assert message in str(stop.value) and not out.exists()  # the corrected command can use the same --out

    def interrupted(settings, out):
        (out / "part.npz").write_bytes(b"finished part")
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        common.main("doc", interrupted, fig4.Fig4Settings(), fig4.QUICK, "fig4", mnist=False, argv=["--quick", "--out", str(out)])
    assert str(stop.value) == (f"interrupted; finished parts are kept in {out}; continue with: "
                               f"python -m experiments.fig4 --quick --out {out} --resume")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "part.npz"]  # the lock is released
    with pytest.raises(SystemExit):
        common.parser(fig4.__doc__, "seeds=2").parse_args(["--help"])
    assert "--set seeds=2" in capsys.readouterr().out  # the help's example is one of the figure's keys


@pytest.mark.mnist
def test_adaptive_tiny(tmp_path, mnist):
    from experiments import adaptive

    settings = adaptive.AdaptiveSettings(seeds=2, epochs=2, widths=(20,), grid_modes=(2, 5), p_max=8, prune_taus=(0.0, 0.3),
                                         prune_until=1, last_epochs=1)
    results = adaptive.run(settings, _mnist_slice(mnist, n_train=600, n_test=300), tmp_path, plot=False)
    assert {"results.json", "config.json"} <= {p.name for p in tmp_path.iterdir()}
    saved = json.loads((tmp_path / "results.json").read_text())["widths"]["20"]
    adaptive.draw(json.loads((tmp_path / "results.json").read_text()))  # the figure draws from the file
    assert set(saved["grid"]) == {"2", "5"} and saved["least_modes"] in (2, 5, None)
    kept, pruned = saved["adaptive"]["0"], saved["adaptive"]["0.3"]
    assert kept["final_modes_mean"] == [8, 8, 8] and max(pruned["final_modes_max"]) < 8  # tau 0 keeps every mode
    assert pruned["final_param_count_mean"] < kept["final_param_count_mean"]
    assert saved["baseline"]["threshold"] == pytest.approx(saved["baseline"]["mean"] - np.std(
        mdl_jax.load_metrics(tmp_path / "runs" / "20_bp_fanin", "bp_fanin")[-1], ddof=1))
    assert results["widths"]["20"]["wall_time_s"]["adaptive"] > 0


def test_vs_dlrt_counts_parameters_as_dlrt_stored_them():
    """DLRT's stored LeNet-5 table (parameters at ranks 10,20,48 / 8,8,15 / 2,2,3) is reproduced
    by the count its numbers use, and the factors' count is larger."""
    from experiments import vs_dlrt
    from experiments.configs.vs_dlrt import DLRT_LENET

    for tol, (_, _, ranks, params, compression, _) in DLRT_LENET.items():
        count = vs_dlrt.counts(vs_dlrt.LENET_LAYERS, vs_dlrt.LENET_HEAD, ranks)
        assert count["dlrt"] == params and count["dense"] == 430_500
        assert round(100 * (1 - count["dlrt"] / count["dense"]), 1) == compression
        assert count["honest"] >= count["dlrt"]


@pytest.mark.mnist
def test_vs_dlrt_tiny(tmp_path, mnist):
    from experiments import vs_dlrt
    from experiments.configs.vs_dlrt import VsDlrtSettings

    settings = VsDlrtSettings(parts=("lenet",), seeds=2, n_train=700, validation=200, n_test=200, lenet_epochs=2,
                              lenet_prune_until=1, lenet_prune_taus=(0.0, 0.3), lenet_p_max=(4, 6, 20),
                              lenet_ranks=((2, 2, 3),), lenet_mdl_adam_lr=None)
    results = vs_dlrt.run(settings, mnist, tmp_path, plot=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    vs_dlrt.draw(saved)  # the figure draws from the file
    lenet = saved["lenet"]["groups"]
    assert set(lenet) == {"dense", "p=2,2,3", "tau=0", "tau=0.3"}
    assert "mlp" not in saved  # the MLP benchmark takes the same path with its own models (run by --quick)
    assert lenet["tau=0"]["selected_modes_mean"] == [4, 6, 20]  # tau 0 prunes nothing
    assert np.all(np.asarray(lenet["tau=0.3"]["selected_modes"]) <= [4, 6, 20])
    assert lenet["tau=0.3"]["params_honest"] <= lenet["tau=0"]["params_honest"]
    assert lenet["p=2,2,3"]["params_dlrt_count"] == 6647 and lenet["dense"]["compression_honest"] == 0
    # a run's reported accuracy is the test accuracy at its lowest validation loss, read from its workdir
    workdir = tmp_path / "runs" / "lenet_dense"
    val, test = (mdl_jax.load_metrics(workdir, "lenet_plain", f) for f in ("val_loss", "test_accuracy"))
    picked = 100 * test[1 + np.argmin(val[1:], 0), np.arange(2)]
    assert lenet["dense"]["test_at_best_val"]["mean"] == pytest.approx(picked.mean())
    verdict = saved["verdict"]["0.45 sgd"]
    assert verdict["accuracy_met"] == (verdict["mdl"][0] >= verdict["dlrt"][0]) and set(saved["verdict"]) == {"0.45 sgd"}
    assert results["wall_time_s"] > 0


@pytest.mark.mnist
def test_the_gpu_script_runs_every_step_on_a_cpu_and_the_cost_study_measures_what_it_says(tmp_path, mnist_dir, mnist):
    """benchmarks/gpu.sh --tiny (the throughput benchmark, the cost study, Fig. 2c) on this
    machine; then the cost study's numbers against their definitions, and its resume."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from experiments import cost

    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHON": sys.executable, mdl_jax.DATA_DIR_ENV: str(Path(mnist_dir).resolve())}
    done = subprocess.run(["bash", "benchmarks/gpu.sh", str(tmp_path), "--tiny"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    read = lambda name: json.loads((tmp_path / name).read_text())
    assert {name: step["status"] for name, step in read("steps.json").items()} == {"throughput": 0, "cost": 0, "fig2": 0}
    assert read("devices.json")["backend"] == jax.default_backend()
    throughput = read("throughput.json")
    assert throughput["single_run_samples_per_s"] > 0 and "numpy_best" not in throughput  # no NumPy baselines there
    assert set(read("fig2/results.json")["least_modes"]["bp"]) == {"25"}

    saved = read("cost/results.json")  # --quick with widths [50], bp and mdl, 1000 images, least p 5, target 60 %
    assert set(saved["cost"]) == {"bp", "mdl", "mdl_least"} and set(saved["cost"]["mdl_least"]) == {"50"}
    for name, by_width in saved["cost"].items():
        for width, entry in by_width.items():
            spec = mdl_jax.make_spec((784, int(width), int(width), 10), entry["modes"], entry["method"])
            assert entry["params"] == mdl_jax.param_count(spec) and entry["flops_per_sample"] == mdl_jax.matmul_flops(spec).training
            assert entry["epoch_s"] == pytest.approx(entry["epoch_times_s"][1]) and len(entry["test_accuracy"]) == 2
            reached = [e for e, a in enumerate(entry["test_accuracy"], 1) if a >= 0.6]
            assert entry["epochs_to_target"] == (reached[0] if reached else None)
            if reached:
                assert entry["time_to_target_s"] == pytest.approx(reached[0] * entry["epoch_s"])
            assert entry["peak_bytes"] > entry["state_bytes"] == 12 * entry["params"] + 8  # parameters, Adam's moments, step counts
    mdl, bp = saved["cost"]["mdl"]["50"], saved["cost"]["bp"]["50"]
    assert saved["ratios"]["mdl"]["bp"]["50"]["flops_per_sample"] == pytest.approx(mdl["flops_per_sample"] / bp["flops_per_sample"])
    assert set(saved["verdict"]) == {"50"} and "mdl_least (p = 5)" in saved["verdict"]["50"]
    assert [row["product"] for row in saved["products"]["50"]["bp"]] == ["h @ W", "h^T @ dy (dW)", "dy @ W^T (dh)"]
    assert len(saved["products"]["50"]["mdl"]) == 6 and all(row["gflops_per_s"] > 0 for row in saved["products"]["50"]["mdl"])
    cost.draw(saved)  # the figure draws from the file

    networks = tmp_path / "cost" / "networks"
    stored = {p: p.stat().st_mtime_ns for p in networks.iterdir()}
    assert len(stored) == 3
    args = common.parser(cost.__doc__).parse_args(["--quick", "--set", "widths=[50]", "--set", 'methods=["bp","mdl"]', "--set",
                                                   "n_train=1000", "--set", "least_modes=[[50,5]]", "--set", "target_accuracy=0.6"])
    settings = common.settings_from(args, cost.CostSettings(), cost.QUICK)
    again = cost.run(settings, mnist, tmp_path / "cost", plot=False)  # a resumed run retrains nothing
    assert {p: p.stat().st_mtime_ns for p in networks.iterdir()} == stored and again["cost"] == saved["cost"]
    with pytest.raises(mdl_jax.ConfigError, match="epochs=1"):
        dataclasses.replace(settings, epochs=1)
    args = common.parser(cost.__doc__).parse_args(["--set", "least_modes=[[100,12],[800,40]]"])  # pairs from the command line
    assert common.settings_from(args, cost.CostSettings(), cost.QUICK).networks(800)["mdl_least"] == ("mdl", 40)
