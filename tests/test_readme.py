"""The README's library snippet runs and its last line holds (on 2 seeds x 1 epoch)."""

import re
from pathlib import Path

import jax
import pytest

README = Path(__file__).parents[1] / "README.md"


def _snippet() -> str:
    text = README.read_text()
    section = text[text.index("## The library"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_snippet_evaluates_a_padded_run_to_its_reported_accuracy(mnist_dir):
    code = _snippet()
    for old, new in (('"path/to/mnist"', repr(mnist_dir)), ("seeds=range(5)", "seeds=range(2)"), ("epochs=20", "epochs=1")):
        assert old in code, f"the README snippet no longer contains {old}: update this test"
        code = code.replace(old, new)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    reported = float(namespace["result"].metrics.test_accuracy[-1, 0])
    assert namespace["sweep"].infos[0].modes == (10, 10, 10) and reported > 0.85
    assert float(namespace["accuracy"]) == pytest.approx(reported, abs=2e-4)  # 2 of 10,000 test images
