"""Every figure script runs end to end on a tiny configuration and writes what it promises."""

import json

import jax
import pytest

from experiments import fig4


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        yield


def test_fig4_tiny(tmp_path):
    settings = fig4.Fig4Settings(panel_a_d=(40, 60), panel_b_d=60, panel_b_alpha=(0.5, 1.0), t_max=30.0,
                                 n_times=8, seeds=2, n_test=1000)
    results = fig4.run(settings, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"fig4.png", "fig4.pdf", "results.json", "config.json"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["configurations"]) == 4
    assert saved["max_rel_gap_theory_vs_simulation"] == results["max_rel_gap_theory_vs_simulation"]
    assert results["max_rel_gap_theory_vs_simulation"] < 0.25  # short horizon, moderate d
    for config in saved["configurations"]:
        assert len(config["eps_ode"]) == len(config["eps_sim_mean"]) == 8
        assert len(config["M_final"]) == 8 and len(config["M_final"][0]) == 8
