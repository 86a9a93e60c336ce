"""Config and command line: errors name the fix; workdirs are complete; resume is exact."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

import mdl_jax
from mdl_jax import ConfigError
from mdl_jax._cli import main
from mdl_jax._config import parse_override, read_config_file

TINY = {"dataset": "gaussian_mixture", "widths": [2, 6, 2], "modes": [2, 3], "seeds": [0, 1],
        "epochs": 3, "learning_rates": [0.03]}
ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::mdl_jax.ModesAboveRankWarning")  # TINY's p = 3 on purpose



def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="unknown config key 'epoch' \\(did you mean 'epochs'\\?\\)"):
        mdl_jax.make_config({"epoch": 3})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"epochs": "ten"}, "'epochs' needs int values"),
        ({"modes": [10, "x"]}, "'modes' needs int values"),
        ({"methods": ["mdl", "mlp"]}, "unknown method 'mlp'"),
        ({"epochs": 0}, "'epochs' must be >= 1"),
        ({"seeds": []}, "at least one value"),
        ({"dtype": "bfloat16"}, "float32 or float64"),
    ],
)
def test_bad_values_raise_clear_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        mdl_jax.make_config(values)


def test_scalars_become_lists_and_overrides_parse():
    config = mdl_jax.make_config({"modes": 30, "learning_rates": 1, "methods": "bp"})
    assert config.modes == (30,) and config.learning_rates == (1.0,) and config.methods == ("bp",)
    assert parse_override("modes=[10,20]") == ("modes", [10, 20])
    assert parse_override("dataset=fashion_mnist") == ("dataset", "fashion_mnist")
    with pytest.raises(ConfigError, match="must look like key=value"):
        parse_override("epochs")


def test_config_files(tmp_path):
    (tmp_path / "c.toml").write_text('methods = ["mdl", "bp"]\nepochs = 4\n')
    assert mdl_jax.make_config(read_config_file(tmp_path / "c.toml")).epochs == 4
    (tmp_path / "bad.json").write_text("{epochs: 4")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_config_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "none.json")


def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["train", "--set", "epoch=3", "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mdl-jax: error: unknown config key 'epoch'") and "Traceback" not in err
    assert main(["train", "--data-dir", str(tmp_path / "missing"), "--workdir", str(tmp_path / "w")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_writes_a_complete_workdir(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    workdir = tmp_path / "run"
    assert main(["train", "--config", str(config), "--set", "methods=[\"mdl\",\"bp\"]",
                 "--workdir", str(workdir), "--quiet"]) == 0
    assert json.loads((workdir / "config.json").read_text())["methods"] == ["mdl", "bp"]
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == (4 + 2) * (3 + 1)  # (2 modes x 2 seeds mdl + 2 seeds bp) x (epochs + init)
    summary = json.loads((workdir / "summary.json").read_text())["runs"]
    assert {r["method"] for r in summary} == {"mdl", "bp"}
    accuracies = [r["final_test_accuracy"] for r in summary]
    assert min(accuracies) > 0.6 and max(accuracies) > 0.9  # chance is 0.5 on Eq. (2)
    assert {"modes", "seed", "learning_rate", "param_count", "wall_time_s"} <= set(summary[0])
    saved = mdl_jax.load_params(workdir, "mdl")
    chex.assert_shape(saved.params["xi_hat"][0], (4, 2, 3))  # runs x N_0 x p_max
    chex.assert_shape(saved.mode_mask, [(4, 3), (4, 3)])
    assert [r["modes"] for r in saved.runs] == [[2, 2], [3, 3], [2, 2], [3, 3]]
    assert "test accuracy (mean ± std over seeds)" in capsys.readouterr().out
    # a second run into the same workdir would overwrite it: refused
    assert main(["train", "--config", str(config), "--workdir", str(workdir), "--quiet"]) == 2


class _Crash(Exception):
    """Stands for a crash right after a checkpoint (the SIGKILL version is in test_scale.py)."""


def _crash_after(method, epoch):
    def on_checkpoint(m, e):
        if (m, e) == (method, epoch):
            raise _Crash
    return on_checkpoint


def test_resume_after_a_crash_gives_the_uninterrupted_numbers(tmp_path):
    config = mdl_jax.make_config({**TINY, "methods": ["mdl", "bp"]})
    mdl_jax.train_and_evaluate(config, tmp_path / "full", progress=False)
    with pytest.raises(_Crash):
        mdl_jax.train_and_evaluate(config, tmp_path / "killed", progress=False, on_checkpoint=_crash_after("mdl", 2))
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert main(["train", "--resume", str(tmp_path / "killed"), "--quiet"]) == 0
    for name in ("metrics.jsonl",):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "killed" / name).read_text()
    for method in ("mdl", "bp"):
        full, resumed = (mdl_jax.load_params(tmp_path / d, method) for d in ("full", "killed"))
        chex.assert_trees_all_equal(full.params, resumed.params)
    kept = sorted(int(p.name) for p in (tmp_path / "killed" / "checkpoints" / "mdl").iterdir() if p.name.isdigit())
    assert kept == [2, 3]  # checkpoint_keep = 2
    # resuming a finished sweep retrains nothing and changes nothing
    before = (tmp_path / "killed" / "metrics.jsonl").read_text()
    assert main(["train", "--resume", str(tmp_path / "killed"), "--quiet"]) == 0
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == before


def test_resume_extends_epochs_to_the_numbers_of_a_longer_run(tmp_path):
    short, long = (mdl_jax.make_config({**TINY, "epochs": e}) for e in (2, 3))
    mdl_jax.train_and_evaluate(long, tmp_path / "long", progress=False)
    mdl_jax.train_and_evaluate(short, tmp_path / "short", progress=False)
    config = json.loads((tmp_path / "short" / "config.json").read_text())
    (tmp_path / "short" / "config.json").write_text(json.dumps({**config, "epochs": 3}))
    assert main(["train", "--resume", str(tmp_path / "short"), "--quiet"]) == 0
    assert (tmp_path / "long" / "metrics.jsonl").read_text() == (tmp_path / "short" / "metrics.jsonl").read_text()
    chex.assert_trees_all_equal(*(mdl_jax.load_params(tmp_path / d, "mdl").params for d in ("long", "short")))


def test_cli_splits_the_cpu_into_one_device_per_core_unless_told_otherwise(monkeypatch):
    from types import SimpleNamespace

    from mdl_jax._cli import _split_cpu

    class Config:
        def __init__(self, preset=-1, error=False):
            self.jax_num_cpu_devices, self.error, self.updates = preset, error, []

        def update(self, name, value):
            if self.error:
                raise RuntimeError("jax_num_cpu_devices config should be updated before backends are initialized")
            self.updates.append((name, value))

    def split(devices=None, distributed=False, **config):
        fake = SimpleNamespace(config=Config(**config))
        _split_cpu(fake, devices, distributed=distributed)
        return fake.config.updates

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert split() == [("jax_num_cpu_devices", os.cpu_count())]
    assert split(devices=1) == [("jax_num_cpu_devices", 1)]
    assert split(distributed=True) == [] and split(preset=3) == [] and split(error=True) == []  # left as they are
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert split() == [] and split(devices=2) == [("jax_num_cpu_devices", 2)]
    with pytest.raises(SystemExit, match="--cpu-devices must be at least 1, got 0"):
        split(devices=0)


def test_overrides_take_comma_lists_and_say_when_json_does_not_parse():
    assert parse_override("methods=bp,mdl") == ("methods", ["bp", "mdl"])
    assert parse_override("modes=10, 20") == ("modes", [10, 20])
    assert parse_override("learning_rates=1e-3,3e-3") == ("learning_rates", [1e-3, 3e-3])
    assert parse_override("epochs=5") == ("epochs", 5) and parse_override("data_dir=/a/b") == ("data_dir", "/a/b")
    config = mdl_jax.make_config(dict(map(parse_override, ["methods=bp,mdl", "modes=10,20"])))
    assert config.methods == ("bp", "mdl") and config.modes == (10, 20)
    with pytest.raises(ConfigError, match=r"could not parse the value of --set 'modes=\[10,20' as JSON"):
        parse_override("modes=[10,20")


def test_version_methods_and_help_say_what_a_user_needs(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"mdl-jax {mdl_jax.__version__}"
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(mdl_jax.METHODS) and lines[0].split()[:2] == ["mdl", "modes"]
    assert any(line.split()[:2] == ["bp", "plain"] for line in lines)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: runs/latest)" in text and "config keys (default):" in text
    assert all(re.search(rf"^  {key} +\S", text, re.M) for key in mdl_jax.TrainConfig().to_json())


def test_resume_takes_set_epochs_and_refuses_what_it_would_ignore(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY, "epochs": 1}))
    assert main(["train", "--config", str(config), "--workdir", "run", "--quiet", "--print-config", "--data-dir", "data"]) == 0
    assert json.loads(capsys.readouterr().out)["data_dir"] == str(tmp_path / "data")  # stored resolved
    assert main(["train", "--config", str(config), "--workdir", "run", "--quiet"]) == 0
    assert main(["train", "--resume", "run", "--workdir", "other", "--quiet"]) == 2
    assert "drop --workdir" in capsys.readouterr().err
    assert main(["train", "--resume", "run", "--set", "seeds=[5]", "--quiet"]) == 2
    assert "--resume accepts only --set epochs=N" in capsys.readouterr().err
    assert main(["train", "--resume", "run", "--set", "epochs=2", "--quiet"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {r["epochs"] for r in summary["runs"]} == {2}


def test_imports_find_modules_of_the_working_directory_from_the_installed_command():
    """The console script (not python -m) has no working directory on its path by itself."""
    script = Path(sys.executable).with_name("mdl-jax")
    out = subprocess.run([str(script), "methods", "--imports", "experiments.models"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^cnn_modes +modes ", out.stdout, re.M)


def test_plot_draws_a_workdir(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY, "methods": ["mdl", "bp"]}))
    assert main(["train", "--config", str(config), "--workdir", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["plot", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "metrics.png").stat().st_size > 10_000
    found = mdl_jax._plot.curves(tmp_path / "run")
    assert set(found) == {("mdl", (2, 2), 0.03), ("mdl", (3, 3), 0.03), ("bp", (), 0.03)}
    assert found[("bp", (), 0.03)]["accuracy"].shape == (2, 4)  # seeds x (epochs + 1)
    np.testing.assert_array_equal(found[("bp", (), 0.03)]["accuracy"][:, -1],
                                  mdl_jax.load_metrics(tmp_path / "run", "bp")[-1])
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err


def test_the_tfds_fallback_names_a_missing_package_not_the_network(monkeypatch):
    import importlib_resources  # noqa: F401  declared: tfds.data_source imports it lazily
    import tensorflow_datasets as tfds

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'some_package'", name="some_package")

    monkeypatch.setattr(tfds, "data_source", missing)
    with pytest.raises(mdl_jax.DataError, match="needs the package some_package, which is not installed"):
        mdl_jax.load_tfds("mnist")


def test_pyproject_license_is_an_spdx_string():
    import tomllib

    assert isinstance(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"], str)
