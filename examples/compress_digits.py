"""Compress a digits classifier: distillation, pruning (magnitude / Taylor / OBD), quantization.

scikit-learn's bundled digits data (:func:`sklearn.datasets.load_digits`: 1,797 8x8 images,
pixels scaled to [0, 1]; a fixed stratified 75/25 train/test split, ``random_state=0``).

1. **Teacher**: an MLP 64-256-256-10 (ReLU), Adam, minibatches of 128, cross-entropy.
2. **Student** 64-32-10, trained twice with the same optimizer, steps and seeds: on the labels
   alone (cross-entropy) and distilled from the teacher with
   :func:`jopt.compress.distillation_loss` (``T = 4``, ``α = 0.9``, fixed before running),
   both through :func:`jopt.compress.distillation_step` (``α = 0`` is plain cross-entropy).
3. **Pruning** of the *distilled student* (the model one would deploy), weight matrices only,
   one global ranking, at 50 / 70 / 90 % sparsity by magnitude ``|w|``, first-order Taylor
   ``mean_b |g_b w|`` (10 training minibatches) and Optimal Brain Damage ``½ h_ii w²`` with
   the *exact* Gauss-Newton diagonal of the student's training loss
   (:func:`jopt.compress.gauss_newton_diag`); each with and without a short fine-tuning
   (200 Adam steps on the same loss, :func:`jopt.compress.keep_pruned` keeps zeros at zero).
4. **Quantization** of the weight matrices of the distilled students and of the teacher
   (symmetric, per output channel; biases stay float32): uniform int8, uniform int4, and
   HAWQ-V2 mixed precision (:func:`jopt.compress.allocate_bits`, widths from
   {2, 3, 4, 5, 6, 8}, exact DP) at an average of at most 4 bits per weight, i.e. never
   larger than uniform int4. Per-layer Hessian traces: Hutchinson
   (:func:`jopt.compress.hessian_traces`, 64 probes) of each model's own training loss on
   the first 512 training examples.

Every student number is the mean over 3 seeds (initialisation and minibatch order; the
table shows ± the standard deviation over seeds); the teacher is one run. Sizes: float32
dense = 4 bytes per parameter; pruned = float32 non-zeros plus a 1-bit-per-weight bitmap
for the pruned matrices (biases dense); quantized = :func:`jopt.compress.quantized_size`
(bit-packed codes, one float32 scale per output channel, float32 biases).

Run ``python examples/compress_digits.py``; it prints a markdown table, checks the
targets (seed means, with the per-seed pairs) and saves ``examples/out/compress_digits.png``.
``--quick`` runs the same pipeline with 2 seeds, a tenth of the training, 50 and 90 %
sparsity and 8 trace probes (the targets are reported, not expected, after so little
training; the figure goes to ``examples/out/quick/``). Either way it checks what holds by
construction: pruned weights stay zero through fine-tuning, and the mixed-precision
allocation is no larger than uniform int4.
Everything is float32 (pinned, so it is the same with x64 enabled).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import jopt
from jopt import compress

OUT_DIR = Path(__file__).resolve().parent / "out"
F32 = jnp.float32
TEACHER = (64, 256, 256, 10)
STUDENT = (64, 32, 10)
TEMPERATURE, ALPHA = 4.0, 0.9
BATCH = 128
FULL = dict(seeds=(0, 1, 2), teacher_epochs=40, student_epochs=150, finetune_steps=200,
            sparsities=(0.5, 0.7, 0.9), probes=64)
QUICK = dict(seeds=(0, 1), teacher_epochs=4, student_epochs=15, finetune_steps=40,
             sparsities=(0.5, 0.9), probes=8)
CRITERIA = ("magnitude", "Taylor", "OBD")

_CPU_OPTIONS = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}


def jit(fn, **kw):
    """``jax.jit`` with XLA:CPU's cheaper compile options (compile time dominates here)."""
    return jax.jit(fn, compiler_options=_CPU_OPTIONS if jax.default_backend() == "cpu"
                   else None, **kw)


# ---------------------------------------------------------------------------- model


def load_data() -> dict:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=0.25,
                                              random_state=0, stratify=digits.target)
    return {"x_train": jnp.asarray(x_tr, F32), "y_train": jnp.asarray(y_tr, jnp.int32),
            "x_test": jnp.asarray(x_te, F32), "y_test": jnp.asarray(y_te, jnp.int32)}


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> list[dict]:
    """He-normal weights ``(in, out)``, zero biases."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (m, n), F32) * math.sqrt(2.0 / m), "b": jnp.zeros(n, F32)}
            for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)]


def mlp(params: list[dict], x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"][None])
    return x @ params[-1]["w"] + params[-1]["b"][None]


def accuracy(params: list[dict], x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(mlp(params, x), axis=-1) == y)


# ---------------------------------------------------------------------- training


def batch_indices(key: jax.Array, n: int, epochs: int) -> jax.Array:
    """``(epochs · n // BATCH, BATCH)`` minibatch indices, reshuffled every epoch."""
    per_epoch = n // BATCH
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, epochs))
    return perms[:, :per_epoch * BATCH].reshape(epochs * per_epoch, BATCH)


def loss_fn(alpha: float):
    """The training objective on logits ``z``: distillation loss (``α = 0``: cross-entropy)."""
    def loss(z, teacher_logits, labels):
        return compress.distillation_loss(z, teacher_logits, labels, temperature=TEMPERATURE,
                                          alpha=alpha)
    return loss


def train(params, data, teacher_logits, key, *, epochs: int, lr: float, alpha: float,
          mask=None):
    """Adam on minibatches in one ``lax.scan``, via :func:`compress.distillation_step`.

    ``inputs = (x, teacher_logits)``, so the teacher's logits are computed once. With a
    ``mask``, :func:`compress.keep_pruned` is chained last (masked fine-tuning).
    """
    opt = jopt.adam(lr)
    if mask is not None:
        opt = optax.chain(opt, compress.keep_pruned(mask))
    step = compress.distillation_step(lambda p, inp: mlp(p, inp[0]), lambda inp: inp[1], opt,
                                      temperature=TEMPERATURE, alpha=alpha)
    x, y = data["x_train"], data["y_train"]

    def body(carry, idx):
        p, s = carry
        p, s, value = step(p, s, ((x[idx], teacher_logits[idx]), y[idx]))
        return (p, s), value

    idx = batch_indices(key, x.shape[0], epochs)
    (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), idx)
    return params


# ---------------------------------------------------------------------- pruning


def prunable(params):
    return compress.weight_matrices(params)


def saliencies(params, data, teacher_logits):
    """Magnitude, minibatch Taylor and OBD (exact Gauss-Newton diagonal) scores."""
    loss = loss_fn(ALPHA)
    x, y = data["x_train"], data["y_train"]
    nb = 10
    usable = (x.shape[0] // nb) * nb
    xb = x[:usable].reshape(nb, -1, x.shape[1])
    yb, tb = y[:usable].reshape(nb, -1), teacher_logits[:usable].reshape(nb, -1, 10)
    grads = jax.vmap(lambda xi, ti, yi: jax.grad(lambda p: loss(mlp(p, xi), ti, yi))(params))(
        xb, tb, yb)
    gn = compress.gauss_newton_diag(lambda p: mlp(p, x), lambda z: loss(z, teacher_logits, y),
                                    params, batch_size=256)
    return {"magnitude": compress.magnitude_scores(params),
            "Taylor": compress.taylor_scores(params, grads, batched=True),
            "OBD": compress.obd_scores(params, gn)}


def pruned_bytes(mask) -> int:
    """float32 non-zeros + a 1-bit-per-weight bitmap for the pruned matrices; biases dense."""
    total = 0
    for m, flag in zip(jax.tree.leaves(mask), jax.tree.leaves(prunable(mask)), strict=True):
        total += 4 * int(np.sum(m)) + math.ceil(m.size / 8) if flag else 4 * m.size
    return total


# ---------------------------------------------------------------------- experiment


def train_models(data: dict, cfg: dict = FULL) -> dict:
    """The teacher (one seed) and both students (all seeds in one vmap, one compile)."""
    xtr, xte, yte = data["x_train"], data["x_test"], data["y_test"]
    n_train = xtr.shape[0]
    # cross-entropy = the distillation step with alpha 0 (the teacher logits are unused)
    teacher = jit(lambda k: train(init_mlp(k, TEACHER), data, jnp.zeros((n_train, 10), F32),
                                  jax.random.fold_in(k, 1), epochs=cfg["teacher_epochs"], lr=1e-3,
                                  alpha=0.0))(jax.random.key(100))
    teacher_logits = jit(mlp)(teacher, xtr)

    keys = jnp.stack([jax.random.key(s) for s in cfg["seeds"]])
    init, order = jit(jax.vmap(lambda k: (init_mlp(k, STUDENT), jax.random.fold_in(k, 1))))(
        keys)
    students = jit(jax.vmap(lambda p, k, alpha: train(
        p, data, teacher_logits, k, epochs=cfg["student_epochs"], lr=3e-3, alpha=alpha),
        in_axes=(0, 0, None)))  # alpha traced: one compile for both students
    label_only, distilled = students(init, order, 0.0), students(init, order, ALPHA)
    acc = jit(jax.vmap(accuracy, in_axes=(0, None, None)))
    return {"teacher": teacher, "teacher_logits": teacher_logits,
            "teacher_acc": np.array([float(jit(accuracy)(teacher, xte, yte))]),
            "label_only": label_only, "distilled": distilled,
            "acc_label": np.asarray(acc(label_only, xte, yte)),
            "acc_distilled": np.asarray(acc(distilled, xte, yte)), "keys": keys}


def prune_students(data: dict, models: dict, cfg: dict = FULL) -> dict:
    """Every criterion x sparsity on the distilled students, with and without fine-tuning."""
    xte, yte = data["x_test"], data["y_test"]
    n_train = data["x_train"].shape[0]
    teacher_logits, distilled = models["teacher_logits"], models["distilled"]
    acc = jit(jax.vmap(accuracy, in_axes=(0, None, None)))
    scores = jit(jax.vmap(lambda p: saliencies(p, data, teacher_logits)))(distilled)
    # sparsity is a traced argument: one compile for all targets
    prune_fn = jit(jax.vmap(lambda p, s, sp: compress.prune(p, s, sp, prunable=prunable),
                            in_axes=(0, 0, None)))
    finetune = jit(jax.vmap(lambda p, m, k: train(
        p, data, teacher_logits, k, epochs=cfg["finetune_steps"] // (n_train // BATCH), lr=1e-3,
        alpha=ALPHA, mask=m)))
    ft_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(models["keys"])
    out = {}
    for crit in CRITERIA:
        for sp in cfg["sparsities"]:
            pruned, mask = prune_fn(distilled, scores[crit], sp)
            tuned = finetune(pruned, mask, ft_keys)
            mask = jax.tree.map(np.asarray, mask)
            zeros_kept = all(np.all(np.asarray(w)[~m] == 0) for w, m in zip(
                jax.tree.leaves(tuned), jax.tree.leaves(mask), strict=True))
            mask0 = jax.tree.map(lambda m: m[0], mask)
            out[crit, sp] = {"acc": np.asarray(acc(pruned, xte, yte)),
                             "acc_ft": np.asarray(acc(tuned, xte, yte)),
                             "zeros_kept": zeros_kept,
                             "bytes": pruned_bytes(mask0)}
    return out


def quantize_models(data: dict, models: dict, *, seeds: tuple[int, ...] = FULL["seeds"],
                    trace_samples: int = 512, probes: int = 64) -> dict:
    """int8 / int4 / HAWQ mixed (average 4 bits) for the distilled students and the teacher.

    Hessian traces: Hutchinson with ``probes`` Rademacher probes on the first
    ``trace_samples`` training examples, of each model's own training loss.
    """
    xte, yte = data["x_test"], data["y_test"]
    xs, ys = data["x_train"][:trace_samples], data["y_train"][:trace_samples]
    ts = models["teacher_logits"][:trace_samples]
    kw = {"channel_axis": -1, "quantizable": prunable}

    @jit
    def traces_fn(p, key, alpha):
        def loss(q):
            return loss_fn(alpha)(mlp(q, xs), ts, ys)
        return compress.hessian_traces(loss, p, key, probes)

    def evaluate(p, bits):
        weight_bits = jnp.asarray([layer["w"] for layer in bits], jnp.int32)
        return float(_eval_quantized(p, weight_bits, xte, yte))

    def one_model(p, key, alpha):
        traces = jax.tree.map(float, traces_fn(p, key, alpha))
        alloc = compress.allocate_bits(p, traces, average_bits=4.0,
                                       candidate_bits=(2, 3, 4, 5, 6, 8), **kw)
        uniform = {b: jax.tree.map(lambda f, b=b: b if f else 0, prunable(p)) for b in (8, 4)}
        return {"int8": evaluate(p, uniform[8]), "int4": evaluate(p, uniform[4]),
                "HAWQ": evaluate(p, alloc.bits),
                "bits": tuple(b for b in jax.tree.leaves(alloc.bits) if b),
                "bytes": {"int8": compress.quantized_size(p, 8, **kw).total,
                          "int4": compress.quantized_size(p, 4, **kw).total,
                          "HAWQ": alloc.size_bytes}}

    distilled = jax.tree.map(np.asarray, models["distilled"])  # host-side slicing
    students = [one_model(jax.tree.map(lambda x, i=i: jnp.asarray(x[i]), distilled),
                          jax.random.key(1000 + s), ALPHA) for i, s in enumerate(seeds)]
    teacher = one_model(models["teacher"], jax.random.key(2000), 0.0)
    return {"students": students, "teacher": teacher}


@jit
def _eval_quantized(params, weight_bits, x, y):
    """Test accuracy with every weight matrix fake-quantized to ``weight_bits[layer]`` bits.

    The widths are traced, so one compiled function serves every allocation; biases stay
    float (width 0, static).
    """
    bits = [{"w": weight_bits[i], "b": 0} for i in range(len(params))]
    return accuracy(compress.fake_quantize_tree(params, bits, channel_axis=-1), x, y)


def run(verbose: bool = True, out_dir: Path = OUT_DIR, quick: bool = False) -> dict:
    """Train, compress, evaluate; print the table, save the plot and the markdown.

    ``quick``: the settings of :data:`QUICK` instead of :data:`FULL`.
    """
    cfg = QUICK if quick else FULL
    start = time.perf_counter()
    data = load_data()
    models = train_models(data, cfg)
    t_train = time.perf_counter()
    pruning = prune_students(data, models, cfg)
    t_prune = time.perf_counter()
    quant = quantize_models(data, models, seeds=cfg["seeds"], probes=cfg["probes"])
    t_quant = time.perf_counter()

    p0 = jax.tree.map(lambda x: np.asarray(x)[0], models["distilled"])
    dense_student = 4 * sum(x.size for x in jax.tree.leaves(p0))
    dense_teacher = 4 * sum(x.size for x in jax.tree.leaves(models["teacher"]))
    rows = [("teacher 64-256-256-10", "none (float32)", dense_teacher, models["teacher_acc"],
             None),
            ("student 64-32-10, labels only", "none (float32)", dense_student,
             models["acc_label"], None),
            ("student 64-32-10, distilled", "none (float32)", dense_student,
             models["acc_distilled"], None)]
    for (crit, sp), r in pruning.items():
        rows.append(("distilled student", f"prune {crit} {sp:.0%}", r["bytes"], r["acc"],
                     r["acc_ft"]))
    st = quant["students"]
    student_bits = sorted({r["bits"] for r in st})
    for name, label in (("int8", "uniform int8"), ("int4", "uniform int4"),
                        ("HAWQ", "HAWQ mixed, avg 4 bits: bits (w1, w2) = "
                         + " / ".join(str(b) for b in student_bits))):
        rows.append(("distilled student", label, st[0]["bytes"][name],
                     np.array([r[name] for r in st]), None))
    te = quant["teacher"]
    for name, label in (("int8", "uniform int8"), ("int4", "uniform int4"),
                        ("HAWQ", f"HAWQ mixed, avg 4 bits: bits (w1, w2, w3) = {te['bits']}")):
        rows.append(("teacher", label, te["bytes"][name], np.array([te[name]]), None))
    table = format_table(rows)

    # each target: (left, right) accuracies per seed; met when the seed means satisfy >=
    targets = {
        "OBD 90% (no fine-tuning) >= magnitude 90%": (
            pruning["OBD", 0.9]["acc"], pruning["magnitude", 0.9]["acc"]),
        "HAWQ mixed avg 4 bits >= uniform int4 (student)": (
            np.array([r["HAWQ"] for r in st]), np.array([r["int4"] for r in st])),
        "HAWQ mixed avg 4 bits >= uniform int4 (teacher)": (
            np.array([te["HAWQ"]]), np.array([te["int4"]])),
        "distilled student >= label-only student": (
            models["acc_distilled"], models["acc_label"]),
    }
    seconds = time.perf_counter() - start
    results = {"rows": rows, "table": table, "targets": targets, "seconds": seconds,
               "zeros_kept": all(r["zeros_kept"] for r in pruning.values()),
               "timings": {"training": t_train - start, "pruning": t_prune - t_train,
                           "quantization": t_quant - t_prune}}
    results["plot"] = plot(rows, out_dir / "compress_digits.png", len(cfg["seeds"]))
    if verbose:
        print(table)
        print()
        for name, (a, b) in targets.items():
            ok = a.mean() >= b.mean()
            seeds = "" if a.size == 1 else "  (per seed: " + ", ".join(
                f"{x:.4f}/{y:.4f}" for x, y in zip(a, b, strict=True)) + ")"
            print(f"target {'met   ' if ok else 'MISSED'}: {name}: {a.mean():.4f} vs "
                  f"{b.mean():.4f}{seeds}")
        print(f"pruned weights stayed exactly zero through fine-tuning: {results['zeros_kept']}")
        print(f"{seconds:.1f} s (" + ", ".join(
            f"{k} {v:.1f} s" for k, v in results["timings"].items()) + ")")
        print(f"plot: {results['plot']}")
    return results


def plot(rows, path: Path, num_seeds: int) -> Path:
    """Test accuracy against size (log scale): the full range, and a zoom on the top."""
    fig = Figure(figsize=(11.0, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    prune_style = {"magnitude": ("C0", "o"), "Taylor": ("C1", "s"), "OBD": ("C2", "^")}
    quant_style = {"uniform int8": "P", "uniform int4": "X", "HAWQ": "*"}
    for ax in axes:
        for model, method, size, a0, a1 in rows:
            teacher = model.startswith("teacher")
            if method.startswith("prune"):
                color, marker = prune_style[method.split()[1]]
                ax.plot(size, 100 * a0.mean(), marker, color=color, mfc="none", ms=7)
                ax.plot(size, 100 * a1.mean(), marker, color=color, ms=7)
            elif method.startswith("none"):
                color = "k" if teacher else ("C3" if "distilled" in model else "C7")
                ax.plot(size, 100 * a0.mean(), "D", color=color, ms=7)
            else:
                marker = quant_style[method.split(",")[0].split(":")[0].replace(" mixed", "")]
                ax.plot(size, 100 * a0.mean(), marker, color="k" if teacher else "C4", ms=9)
        ax.set_xscale("log")
        ax.set_xlabel("size (bytes, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_title("all models")
    axes[1].set_ylim(94.0, 99.0)
    axes[1].set_title("zoom: 94-99 %")
    handles = []
    for crit, (color, marker) in prune_style.items():
        handles += axes[0].plot([], [], marker, color=color, mfc="none",
                                label=f"student pruned, {crit}")
        handles += axes[0].plot([], [], marker, color=color, label="  … + fine-tuning")
    for label, color in (("teacher float32", "k"), ("student, distilled", "C3"),
                         ("student, labels only", "C7")):
        handles += axes[0].plot([], [], "D", color=color, label=label)
    for name, marker in quant_style.items():
        handles += axes[0].plot([], [], marker, color="C4", ms=9,
                                label=f"{name} (purple: student, black: teacher)")
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    fig.suptitle("Digits: compressing a distilled 64-32-10 student and its 64-256-256-10 "
                 f"teacher (student: mean of {num_seeds} seeds)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def format_table(rows) -> str:
    lines = ["| model | compression | size (bytes) | test accuracy | after fine-tuning |",
             "|---|---|---:|---:|---:|"]

    def fmt(a):
        if a is None:
            return "—"
        return f"{100 * a.mean():.2f} %" + (f" ± {100 * a.std():.2f}" if a.size > 1 else "")

    for model, method, size, a0, a1 in rows:
        lines.append(f"| {model} | {method} | {size:,} | {fmt(a0)} | {fmt(a1)} |")
    return "\n".join(lines)


def main(quick: bool = False) -> None:
    results = run(quick=quick, out_dir=OUT_DIR / "quick" if quick else OUT_DIR)
    # What holds by construction, whatever the training: the mask survives fine-tuning,
    # and the mixed-precision allocation is never larger than uniform int4.
    assert results["zeros_kept"], "pruned weights must stay zero through fine-tuning"
    sizes = {r[1].split(":")[0]: r[2] for r in results["rows"] if r[0] == "teacher"}
    assert sizes["HAWQ mixed, avg 4 bits"] <= sizes["uniform int4"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("JOPT_EXAMPLES_QUICK") == "1",
                        help="a few-second run (also JOPT_EXAMPLES_QUICK=1)")
    main(quick=parser.parse_args().quick)
