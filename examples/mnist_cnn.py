"""Assignment 3, part 1: a small CNN on MNIST, with regularisers, an optimizer study and priming.

The network: two blocks of  conv 3x3 -> [batch norm] -> ReLU -> max pool 2x2,
then [dropout] -> linear -> ReLU -> [dropout] -> linear to the 10 classes. Every
regulariser is behind a flag; 5000 training images are set aside for validation.

One training step, as in every example:
    logits = model(images)                  # forward: the graph is built op by op
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(); loss.backward()  # gradients of every parameter
    optimizer.step()                        # the update

    python examples/mnist_cnn.py                        # defaults: Adam, cosine schedule, 3 epochs
    python examples/mnist_cnn.py --augment --weight-decay 5e-4 --early-stopping --epochs 12
    python examples/mnist_cnn.py --study                # optimizers, regularisers: equal budgets
    python examples/mnist_cnn.py --prime 1000           # seconds to 98% with and without priming
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
import tinygrad_uu.nn.functional as F  # noqa: E402
from tinygrad_uu import nn, optim, viz  # noqa: E402
from tinygrad_uu.data import DataLoader, DigitAugment, TensorDataset  # noqa: E402
from tinygrad_uu.files import atomic_path, save_json  # noqa: E402
from tinygrad_uu.debug import GradientMonitor  # noqa: E402

# Adam's default in common.OPTIMIZERS (1e-3) suits the MLP; with batch norm this CNN
# learns faster at 3e-3 (3 epochs, cosine: 99.0-99.1% test accuracy in a torch replica
# of these defaults, 2 seeds). The other optimizers keep common's defaults.
CNN_LR = {"adam": 3e-3, "adamw": 3e-3}
# The strengths the studies use for a regulariser the command line leaves off.
STUDY_WEIGHT_DECAY, STUDY_DROPOUT = 5e-4, 0.25
# Images per forward pass in evaluation: 250 keeps the activations in cache (2000 test
# images took 1.8 s in batches of 250, 2.4-4.7 s in batches of 1000).
EVAL_BATCH = 250
GRAD_EVERY = 20  # training steps between two records of the gradient norms (grad_flow.png)


def evaluate(model, data):
    """(mean cross-entropy, accuracy) on (images, labels), the model in eval mode."""
    return common.evaluate(model, *data, batch_size=EVAL_BATCH)


# ----------------------------------------------------------------------------- the model

def build_model(channels=(16, 32), hidden: int = 128, batch_norm: bool = True,
                dropout: float = 0.1) -> nn.Sequential:
    """(N, 1, 28, 28) -> (N, 10): conv blocks that halve the image, then the classifier."""
    layers, c_in, side = [], 1, 28
    for c_out in channels:
        layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm))
        if batch_norm:  # BN's own shift makes the conv's bias redundant
            layers.append(nn.BatchNorm2d(c_out))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        c_in, side = c_out, side // 2
    layers.append(nn.Flatten())
    features = c_in * side * side
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    if hidden > 0:
        layers += [nn.Linear(features, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        features = hidden
    layers.append(nn.Linear(features, 10))
    return nn.Sequential(*layers)


def make_loader(images, labels, cfg, seed_offset: int = 0) -> DataLoader:
    """Shuffled batches; with ``cfg.augment`` every batch is rotated and shifted afresh."""
    augment = (DigitAugment(cfg.max_shift, cfg.max_degrees, seed=cfg.seed + 1000 + seed_offset)
               if cfg.augment else None)
    return DataLoader(TensorDataset(images, labels), batch_size=cfg.batch_size, shuffle=True,
                      seed=cfg.seed + seed_offset, transform=augment)


def learning_rate(cfg) -> float:
    """--lr, or this example's default for the optimizer (CNN_LR, then common's)."""
    if cfg.lr is not None:
        return cfg.lr
    return CNN_LR.get(cfg.optimizer, common.OPTIMIZERS[cfg.optimizer][1])


def make_scheduler(optimizer, name: str, epochs: int, steps_per_epoch: int):
    """Stepped after every batch (a smoother decay than once per epoch, which matters
    in a run of 3 epochs): cosine from lr down to 0 over the whole run, or halve the lr
    at the end of every epoch."""
    if name == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    if name == "step":
        return optim.StepLR(optimizer, step_size=steps_per_epoch, gamma=0.5)
    return None


# ----------------------------------------------------------------------------- training

def train_epoch(model, optimizer, loader, desc, watch, on_step=None, scheduler=None):
    """One pass over the loader; returns (mean loss, accuracy, stopped).

    ``watch`` times the training only: fetching (and augmenting) a batch and the step.
    ``on_step(seconds)`` is called after every step, outside the stopwatch; when it
    returns True the epoch ends early (``stopped`` is then True).
    """
    total_loss = correct = seen = 0
    batches = iter(loader)
    bar = tqdm(total=len(loader), desc=desc, leave=False, unit="batch")
    stopped = False
    for _ in range(len(loader)):
        with watch:
            images, labels = next(batches)
            logits = model(tg.tensor(images))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        total_loss += loss.item() * len(labels)
        correct += int((logits.data.argmax(axis=1) == labels).sum())
        seen += len(labels)
        bar.update()
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
        if on_step is not None and on_step(watch.seconds):
            stopped = True
            break
    bar.close()
    return total_loss / seen, correct / seen, stopped


def fit(cfg, train, val, test, name: str = "", grad_every: int = 0):
    """Build a model from ``cfg`` and train it for ``cfg.epochs`` epochs, evaluating on
    ``val`` and ``test`` after each; with ``cfg.early_stopping``, stop when the validation
    loss stalls for ``cfg.patience`` epochs and go back to the best weights. With
    ``grad_every``, history["grad_monitor"] records gradient norms every that many steps.
    Returns (model, history dict)."""
    tg.manual_seed(cfg.seed)
    model = build_model(cfg.channels, cfg.hidden, cfg.batch_norm, cfg.dropout)
    optimizer = common.make_optimizer(cfg.optimizer, model.parameters(), learning_rate(cfg),
                                      cfg.weight_decay)
    loader = make_loader(*train, cfg)
    scheduler = make_scheduler(optimizer, cfg.schedule, cfg.epochs, len(loader))
    stopper = common.EarlyStopping(cfg.patience) if cfg.early_stopping else None
    monitor = GradientMonitor(model, grad_every, optimizer=optimizer) if grad_every else None
    keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
            "test_accuracy", "learning_rate")
    history = {key: [] for key in keys}
    watch, prefix = common.Stopwatch(), f"{name}: " if name else ""
    for epoch in range(1, cfg.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        loss, accuracy, _ = train_epoch(model, optimizer, loader,
                                        f"{prefix}epoch {epoch}/{cfg.epochs}", watch,
                                        scheduler=scheduler)
        val_loss, val_accuracy = evaluate(model, val)
        test_loss, test_accuracy = evaluate(model, test)
        for key, value in zip(keys, (loss, accuracy, val_loss, val_accuracy, test_loss,
                                     test_accuracy, lr)):
            history[key].append(value)
        print(f"{prefix}epoch {epoch:2d}: train loss {loss:.4f}, accuracy {accuracy:.4f} | "
              f"val loss {val_loss:.4f}, accuracy {val_accuracy:.4f} | "
              f"test accuracy {test_accuracy:.4f} | lr {lr:.2g}", flush=True)
        if stopper is not None and stopper.step(val_loss, model, epoch):
            print(f"{prefix}early stopping: no better validation loss for {cfg.patience} "
                  f"epochs since epoch {stopper.best_epoch}")
            break
    history["epochs_run"] = len(history["train_loss"])
    history["best_epoch"] = history["epochs_run"]
    history["stopped_early"] = history["epochs_run"] < cfg.epochs
    if stopper is not None:
        stopper.restore(model)
        history["best_epoch"] = stopper.best_epoch
        print(f"{prefix}restored the weights of epoch {stopper.best_epoch} "
              f"(validation loss {stopper.best:.4f})")
    history["train_seconds"] = watch.seconds
    history["samples_per_second"] = history["epochs_run"] * len(train[1]) / watch.seconds
    if monitor is not None:
        monitor.remove()
        history["grad_monitor"] = monitor
    return model, history


# ----------------------------------------------------------------------------- the study

def variant(cfg, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(cfg), **changes})


def study_runs(cfg) -> dict:
    """The two comparisons: {study: {run name: config}}; every run sees the same images
    for the same number of epochs. Optimizers: the model of the command line, each at
    its default learning rate. Regularisers: one at a time on a bare CNN, then all."""
    wd = cfg.weight_decay or STUDY_WEIGHT_DECAY
    p = cfg.dropout or STUDY_DROPOUT
    base = variant(cfg, epochs=cfg.study_epochs, early_stopping=False)
    bare = variant(base, weight_decay=0.0, dropout=0.0, batch_norm=False, augment=False)
    return {
        "optimizers": {name: variant(base, optimizer=name, lr=None)
                       for name in ("sgd", "momentum", "adam", "rmsprop")},
        "regularisers": {
            "none": bare,
            f"weight decay {wd:g}": variant(bare, weight_decay=wd),
            f"dropout {p:g}": variant(bare, dropout=p),
            "batch norm": variant(bare, batch_norm=True),
            "augmentation": variant(bare, augment=True),
            "all": variant(bare, weight_decay=wd, dropout=p, batch_norm=True, augment=True),
        },
    }


def run_study(cfg, train, val, test, out: Path) -> dict:
    n = min(cfg.study_limit, len(train[1]))
    train = (train[0][:n], train[1][:n])
    val = (val[0][:cfg.eval_size // 2], val[1][:cfg.eval_size // 2])
    test = (test[0][:cfg.eval_size], test[1][:cfg.eval_size])
    print(f"study: {n} training images, {cfg.study_epochs} epochs per run; validation on "
          f"{len(val[1])}, test on the first {len(test[1])} test images")
    results, table = {}, ["# MNIST CNN: optimizer and regulariser study", "",
                          f"Every run: the same {n} training images, {cfg.study_epochs} epochs, "
                          f"batch {cfg.batch_size}, seed {cfg.seed}; validation on "
                          f"{len(val[1])} held-out training images, test on the first "
                          f"{len(test[1])} test images. Accuracies after the last epoch.", ""]
    for study, runs in study_runs(cfg).items():
        results[study] = {}
        curves = {}
        for name, run_cfg in runs.items():
            _, history = fit(run_cfg, train, val, test, name=name)
            history["config"] = {k: getattr(run_cfg, k) for k in
                                 ("optimizer", "weight_decay", "dropout", "batch_norm",
                                  "augment")}
            history["config"]["lr"] = learning_rate(run_cfg)
            results[study][name] = history
            curves[f"{name} train loss"] = history["train_loss"]
            curves[f"{name} test accuracy"] = history["test_accuracy"]
        viz.plot_curves(curves, out / f"study_{study}.png",
                        title=f"{study}: {n} images, {cfg.study_epochs} epochs each")
        table += [f"## {study.capitalize()}", "",
                  "| run | train loss | train acc | val acc | test acc | best test acc "
                  "| train s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, h in results[study].items():
            table.append(f"| {name} | {h['train_loss'][-1]:.4f} | {h['train_accuracy'][-1]:.4f} "
                         f"| {h['val_accuracy'][-1]:.4f} | {h['test_accuracy'][-1]:.4f} "
                         f"| {max(h['test_accuracy']):.4f} | {h['train_seconds']:.1f} |")
        table.append("")
    with atomic_path(out / "study.md") as tmp:
        tmp.write_text("\n".join(table))
    print("\n".join(table))
    return {"train_images": n, "epochs": cfg.study_epochs, "val_images": len(val[1]),
            "test_images": len(test[1]), **results}


# ----------------------------------------------------------------------------- priming

def time_to_target(cfg, train, test, prime: int, full_epochs: int, label: str) -> dict:
    """Train (after ``cfg.prime_epochs`` epochs on the first ``prime`` images, if prime > 0)
    on the full training set, checking the test subset every ``cfg.eval_every`` steps;
    stop at the first check at or above ``cfg.target``. The learning rate stays constant
    (a schedule would depend on when the run stops). Returns the trace and the training
    seconds to the target (priming included), or None if never reached."""
    tg.manual_seed(cfg.seed)
    model = build_model(cfg.channels, cfg.hidden, cfg.batch_norm, cfg.dropout)
    optimizer = common.make_optimizer(cfg.optimizer, model.parameters(), learning_rate(cfg),
                                      cfg.weight_decay)
    watch = common.Stopwatch()
    trace = {"seconds": [], "steps": [], "test_accuracy": []}
    state = {"steps": 0, "reached": None}

    def check(seconds):
        state["steps"] += 1
        if state["steps"] % cfg.eval_every:
            return False
        accuracy = evaluate(model, test)[1]
        for key, value in zip(trace, (seconds, state["steps"], accuracy)):
            trace[key].append(value)
        if accuracy >= cfg.target and state["reached"] is None:
            state["reached"] = seconds
        return state["reached"] is not None

    phases = []
    if prime > 0:
        subset = (train[0][:prime], train[1][:prime])
        phases += [(subset, f"{label} priming {e}/{cfg.prime_epochs}", 1)
                   for e in range(1, cfg.prime_epochs + 1)]
    phases += [(train, f"{label} epoch {e}/{full_epochs}", 2)
               for e in range(1, full_epochs + 1)]
    loaders = {}
    prime_seconds = 0.0
    for data, desc, phase in phases:
        loader = loaders.setdefault(phase, make_loader(*data, cfg, seed_offset=phase))
        _, _, stopped = train_epoch(model, optimizer, loader, desc, watch, on_step=check)
        if phase == 1:
            prime_seconds = watch.seconds
        if stopped:
            break
    reached = state["reached"]
    where = (f"reached {cfg.target:.0%} after {reached:.1f} s of training ({state['steps']} steps)"
             if reached is not None else f"never reached {cfg.target:.0%} within the budget")
    print(f"{label}: {where}")
    return {"seconds_to_target": reached, "steps": state["steps"], "prime_images": prime,
            "prime_epochs": cfg.prime_epochs if prime > 0 else 0, "prime_seconds": prime_seconds,
            "train_seconds": watch.seconds, "trace": trace}


def plot_accuracy_vs_seconds(runs: dict, target: float, path: Path) -> Path:
    """Test accuracy against training seconds, one line per run, the target dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, run in runs.items():
        ax.plot(run["trace"]["seconds"], run["trace"]["test_accuracy"], marker="o",
                markersize=3, label=name)
        if run["prime_seconds"]:
            ax.axvline(run["prime_seconds"], color="grey", linestyle=":", linewidth=1)
    ax.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target {target:.0%}")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(max(0.0, min([target - 0.1] + [min(r["trace"]["test_accuracy"], default=1.0)
                                                for r in runs.values()])), 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    reached = {name: run["seconds_to_target"] for name, run in runs.items()}
    ax.set_title(f"training seconds to {target:.0%}: " + ", ".join(
        f"{name} {'never' if s is None else f'{s:.0f} s'}" for name, s in reached.items()))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def run_priming(cfg, train, test, out: Path) -> dict:
    test = (test[0][:cfg.eval_size], test[1][:cfg.eval_size])
    prime = min(cfg.prime, len(train[1]))
    print(f"priming: {cfg.prime_epochs} epochs on {prime} images, then the full {len(train[1])}; "
          f"test accuracy on the first {len(test[1])} test images every {cfg.eval_every} steps, "
          f"until {cfg.target:.0%} or {cfg.epochs} full epochs")
    runs = {"without priming": time_to_target(cfg, train, test, 0, cfg.epochs, "plain"),
            f"primed on {prime}": time_to_target(cfg, train, test, prime, cfg.epochs, "primed")}
    plot_accuracy_vs_seconds(runs, cfg.target, out / "priming.png")
    plain, primed = runs.values()
    return {"target": cfg.target, "test_images": len(test[1]), "eval_every": cfg.eval_every,
            target_key(cfg.target): {"without_priming": plain["seconds_to_target"],
                                     "with_priming": primed["seconds_to_target"]},
            "runs": runs}


def target_key(target: float) -> str:
    """"seconds_to_98" for a target of 0.98: None in it means never reached."""
    return f"seconds_to_{100 * target:g}"


# ----------------------------------------------------------------------------- the main run

def save_main_outputs(model, history, test, out: Path, monitor: GradientMonitor):
    test_x, test_y = test
    probs = common.predict(model, test_x, EVAL_BATCH)
    predictions = probs.argmax(1)
    curves = {k: history[k] for k in ("train_loss", "val_loss", "train_accuracy", "val_accuracy",
                                      "test_accuracy") if not np.isnan(history[k]).all()}
    viz.plot_curves(curves, out / "curves.png", title="MNIST CNN")
    viz.plot_confusion_matrix(test_y, predictions, out / "confusion_matrix.png")
    wrong = np.flatnonzero(predictions != test_y)
    confidence = probs[np.arange(len(test_y)), predictions]
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:24]
    shown = worst
    if len(worst) == 0:  # no mistakes at all: show the digits it was least sure of
        print("no test digit is misclassified: misclassified.png shows the least confident")
        shown = np.argsort(confidence, kind="stable")[:24]
    viz.plot_image_grid(test_x[shown], out / "misclassified.png", ncols=8,
                        titles=[f"true {test_y[i]}, pred {predictions[i]} ({confidence[i]:.2f})"
                                for i in shown])
    viz.plot_filters(model[0], out / "filters.png")  # the first layer's 3x3 filters
    first_relu = next(m for m in model if isinstance(m, nn.ReLU))
    viz.plot_feature_maps(model, first_relu, test_x[0], out / "feature_maps.png")
    viz.plot_grad_flow(monitor, out / "grad_flow.png")
    saved = common.save_model(model, test_x[:1], out)  # model.npz (+ model.onnx)
    return probs, predictions, worst, saved


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.apply_engine_options(args)
    started = time.perf_counter()
    (train_x, train_y), test = common.load_mnist(args.data_dir, args.limit)
    val_size = min(args.val_size, len(train_y) // 10)
    if val_size < args.val_size:
        print(f"--val-size {args.val_size} is more than a tenth of the {len(train_y)} "
              f"training images: setting aside {val_size}")
    train, val = common.split_validation(train_x, train_y, val_size, seed=args.seed)
    if args.early_stopping and val_size == 0:
        raise SystemExit("--early-stopping needs a validation set (--val-size > 0)")
    out = Path(args.out)
    print(f"{len(train[1])} training images, {len(val[1])} for validation, "
          f"{len(test[1])} for testing")
    metrics = {"config": vars(args)}

    if args.study or args.prime:
        if args.study:
            metrics["study"] = run_study(args, train, val, test, out)
        if args.prime:
            metrics["priming"] = run_priming(args, train, test, out)
            key = target_key(args.target)
            print(f"{key} (training seconds, None = not reached): {metrics['priming'][key]}")
    else:
        print(build_model(args.channels, args.hidden, args.batch_norm, args.dropout))
        model, history = fit(args, train, val, test, grad_every=GRAD_EVERY)
        monitor = history.pop("grad_monitor")
        probs, predictions, worst, saved = save_main_outputs(model, history, test, out, monitor)
        picked = probs[np.arange(len(test[1])), test[1]]
        metrics.update({
            "test_accuracy": float((predictions == test[1]).mean()),
            "test_loss": float(-np.log(np.maximum(picked, 1e-12)).mean()),
            "test_accuracy_per_epoch": history.pop("test_accuracy"),
            "test_loss_per_epoch": history.pop("test_loss"),
            **history,
            "parameters": model.num_parameters(),
            "most_confident_mistakes": [{"index": int(i), "true": int(test[1][i]),
                                         "predicted": int(predictions[i]),
                                         "confidence": float(probs[i, predictions[i]])}
                                        for i in worst],
        })
    metrics["wall_seconds"] = time.perf_counter() - started
    metrics["load_average"] = list(os.getloadavg())
    save_json(out / "metrics.json", metrics)
    if "test_accuracy" in metrics:
        print(f"test accuracy {metrics['test_accuracy']:.4f}; "
              f"{metrics['samples_per_second']:.0f} samples/s over "
              f"{metrics['train_seconds']:.1f} s of training "
              f"({metrics['wall_seconds']:.1f} s in all, load average "
              f"{metrics['load_average'][0]:.1f}); figures, {saved} and metrics.json in {out}/")
    else:
        print(f"done in {metrics['wall_seconds']:.1f} s; figures"
              f"{', study.md' if args.study else ''} and metrics.json in {out}/")
    return metrics


# ----------------------------------------------------------------------------- options

def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_options(p, out="runs/mnist_cnn", epochs=3, batch_size=128, optimizer="adam")
    common.update_options(p, lr=dict(help="learning rate (default: a good one for the optimizer, " + ", ".join(
        f"{k} {CNN_LR.get(k, v[1]):g}" for k, v in common.OPTIMIZERS.items()) + ")"))
    p.add_argument("--schedule", choices=("cosine", "step", "none"), default="cosine",
                   help="learning rate, updated after every batch: cosine from --lr down "
                        "to 0 over --epochs, step halves it every epoch, none keeps it")
    model = p.add_argument_group("model")
    model.add_argument("--channels", type=common.positive_int, nargs="+", default=[16, 32],
                       help="output channels of each conv block (each block halves the image)")
    model.add_argument("--hidden", type=common.non_negative_int, default=128,
                       help="units of the hidden linear layer; 0 for none")
    reg = p.add_argument_group("regularisation")
    reg.add_argument("--weight-decay", type=float, default=0.0,
                     help="L2 penalty in the optimizer (AdamW: decoupled); 0 is off")
    reg.add_argument("--dropout", type=probability, default=0.1,
                     help="dropout before each linear layer; 0 is off")
    reg.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True,
                     help="batch norm after each convolution")
    reg.add_argument("--augment", action="store_true",
                     help="random rotations and shifts of every training batch")
    reg.add_argument("--max-shift", type=common.non_negative_int, default=2,
                     help="augmentation: largest shift in pixels")
    reg.add_argument("--max-degrees", type=float, default=10.0,
                     help="augmentation: largest rotation in degrees")
    reg.add_argument("--val-size", type=common.non_negative_int, default=5000,
                     help="training images set aside for validation (at most a tenth)")
    reg.add_argument("--early-stopping", action="store_true",
                     help="stop when the validation loss has not improved for --patience "
                          "epochs, and keep the best weights")
    reg.add_argument("--patience", type=common.positive_int, default=2,
                     help="early stopping: epochs without a better validation loss")
    study = p.add_argument_group("studies (instead of the main run)")
    study.add_argument("--study", action="store_true",
                       help="compare sgd/momentum/adam/rmsprop, then no regulariser/weight "
                            "decay/dropout/batch norm/augmentation/all, on equal budgets; "
                            "writes study_*.png and study.md")
    study.add_argument("--study-limit", type=common.positive_int, default=2000,
                       help="training images for every run of the study")
    study.add_argument("--study-epochs", type=common.positive_int, default=10,
                       help="epochs for every run of the study")
    study.add_argument("--eval-size", type=common.positive_int, default=2000,
                       help="test images the study and priming evaluate on (the first N; "
                            "the study validates on half as many)")
    study.add_argument("--prime", type=common.non_negative_int, default=0, metavar="N",
                       help="priming: train --prime-epochs epochs on N images, then on all; "
                            "compare the training seconds to --target test accuracy with "
                            "plain training (at most --epochs full epochs each)")
    study.add_argument("--prime-epochs", type=common.positive_int, default=3,
                       help="priming: epochs on the N images")
    study.add_argument("--eval-every", type=common.positive_int, default=25,
                       help="priming: steps between test evaluations")
    study.add_argument("--target", type=probability, default=0.98,
                       help="priming: the test accuracy to reach")
    common.add_engine_options(p)
    args = p.parse_args(argv)
    if args.early_stopping and args.val_size == 0:
        p.error("--early-stopping needs a validation set (--val-size > 0)")
    return args


if __name__ == "__main__":
    main()
