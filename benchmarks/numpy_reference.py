"""Plain-NumPy 1L2P training steps: the baselines that ``throughput.py`` measures.

Hand-written backpropagation of Eq. (3) and Adam with decoupled weight decay, float32.
``dense=True`` computes like the letter's authors' scripts: every step forms each dense
``W = xi_hat diag(sigma) xi^T`` from the factors and propagates through it (their scripts
form W several times a step; this forms it once). ``dense=False`` never forms W.
"""

from __future__ import annotations

import numpy as np


class NumpyMDL:
    """784-100-100-10-style 1L2P network trained by minibatch Adam in NumPy."""

    def __init__(self, widths, p, *, seed=0, weight_decay=1e-4, dense=False):
        self.dense = dense
        rng = np.random.default_rng(seed)
        self.factors = []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            scale = (n_in * np.log(n_in)) ** (-1 / 6)
            self.factors.append([
                (scale * rng.standard_normal(shape)).astype(np.float32)
                for shape in ((n_in, p), (p,), (n_out, p))
            ])
        self.m = [[np.zeros_like(a) for a in layer] for layer in self.factors]
        self.v = [[np.zeros_like(a) for a in layer] for layer in self.factors]
        self.t, self.weight_decay = 0, weight_decay

    def gradients(self, x, onehot):
        weights = [(xi_hat * sigma) @ xi.T for xi_hat, sigma, xi in self.factors] if self.dense else None
        h, fields, z = [x], [], []
        for l, (xi_hat, sigma, xi) in enumerate(self.factors):
            kappa = h[-1] @ xi_hat
            fields.append(kappa)
            z.append(h[-1] @ weights[l] if self.dense else (kappa * sigma) @ xi.T)
            if l < len(self.factors) - 1:
                h.append(np.maximum(z[-1], 0))
        logits = z[-1] - z[-1].max(1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(1, keepdims=True)
        error = (prob - onehot) / len(x)
        grads = [None] * len(self.factors)
        for l in reversed(range(len(self.factors))):
            xi_hat, sigma, xi = self.factors[l]
            back = error @ xi  # sum_j K_j xi_ja
            grads[l] = [h[l].T @ (back * sigma), (back * fields[l]).sum(0), error.T @ (fields[l] * sigma)]
            if l > 0:
                through = error @ weights[l].T if self.dense else (back * sigma) @ xi_hat.T
                error = through * (z[l - 1] > 0)
        return grads

    def step(self, x, onehot, lr, b1=0.9, b2=0.999, eps=1e-8):
        grads = self.gradients(x, onehot)
        self.t += 1
        for layer, g_layer, m_layer, v_layer in zip(self.factors, grads, self.m, self.v):
            for a, g, m, v in zip(layer, g_layer, m_layer, v_layer):
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                m_hat = m / (1 - b1**self.t)
                v_hat = v / (1 - b2**self.t)
                a -= lr * (m_hat / (np.sqrt(v_hat) + eps) + self.weight_decay * a)


def samples_per_s(images: np.ndarray, labels: np.ndarray, *, dense: bool, steps: int, start_at: float | None = None) -> float:
    """Training samples per second of ``steps`` Adam steps (batch 100, p = 30, 784-100-100-10),
    after one warm-up step; with ``start_at`` (a ``time.time()``), the timed loop starts then,
    so that processes started together are timed over the same interval."""
    import time

    net = NumpyMDL((784, 100, 100, 10), 30, dense=dense)
    onehot = np.eye(10, dtype=np.float32)[labels]
    batches = len(labels) // 100
    net.step(images[:100], onehot[:100], 3e-3)
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    start = time.perf_counter()
    for s in range(steps):
        batch = slice(100 * (s % batches), 100 * (s % batches + 1))
        net.step(images[batch], onehot[batch], 3e-3)
    return steps * 100 / (time.perf_counter() - start)


if __name__ == "__main__":  # one timed process (throughput.py starts these with their BLAS threads set)
    import argparse
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dense", action="store_true")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--start-at", type=float)
    args = parser.parse_args()
    import mdl_jax

    data = mdl_jax.load_idx_folder(args.data_dir)
    rate = samples_per_s(data.train_images, data.train_labels, dense=args.dense, steps=args.steps, start_at=args.start_at)
    print(json.dumps({"samples_per_s": rate}))
