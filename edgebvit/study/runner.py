"""Run a ladder: train, export and evaluate every rung and seed, then tabulate and plot.

Every step is the public CLI in a subprocess (`python -m edgebvit train|export`), so each run is a
normal run directory (STUDY/<rung>/seed<S>) and a fresh process (TensorFlow's memory is returned
between runs). The study is resumable at any point: a finished run (summary.json) and a finished
export (model.export.json beside model.tflite) are kept, a killed run continues with
`train --resume`, and a run killed before its first checkpoint starts again. STUDY/study.json
records the settings; resuming with different ones is refused, so one table never mixes budgets.

The flatbuffer's test accuracy comes from export's parity gate: every run saves
`parity_images=N` held-out test images (all of them when the test split is smaller), and the
export compares Keras and the LCE flatbuffer on all N, with labels.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from edgebvit.errors import EdgebvitError
from edgebvit.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgebvit.study.ladders import Ladder, Rung

STUDY_FILE = "study.json"
TEACHER_DIR = "teacher"
PARITY_EXIT = 3  # export's exit status when the parity gate fails: a result to tabulate, not a crash


@dataclass
class StudySettings:
    """Everything that makes two runs of a rung comparable; stored in STUDY/study.json."""

    ladder: str
    rungs: List[str]
    data: List[str]  # `edgebvit train` data arguments (--data, --data-dir, --max-train-samples, ...)
    epochs: int
    batch_size: Optional[int]  # None: train's auto batch (32 for a short budget, else 128)
    lr: Optional[float]
    seeds: List[int]
    eval_images: int
    teacher: Optional[str] = None  # a finished run directory
    teacher_model: Optional[str] = None  # or a registered float model trained once into STUDY/teacher
    teacher_epochs: int = 0
    distill: List[str] = field(default_factory=list)  # KEY=VALUE distillation overrides
    overrides: List[str] = field(default_factory=list)  # KEY=VALUE for every run


def _changed_keys(saved: Dict, now: Dict) -> List[str]:
    """Settings that differ from the saved study's; more seeds or rungs only extend it."""
    return [k for k in now if saved.get(k) != now[k] and k not in ("seeds", "rungs")]


class Study:
    """One study folder. `run()` does whatever is missing, then writes the table and the plot."""

    def __init__(self, out: Path, ladder: Ladder, settings: StudySettings, *,
                 echo: Callable[[str], None] = print, python: str = sys.executable):
        self.out = Path(out)
        self.ladder = ladder
        self.settings = settings
        self.echo = echo
        self.python = python

    # --------------------------------------------------------------------------------------
    def _saved_settings(self) -> Optional[Dict]:
        """STUDY/study.json as saved, or None for a new study folder."""
        path = self.out / STUDY_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError:
            raise EdgebvitError(f"{path} is not valid JSON; move it away to start this study afresh") from None

    def _check_settings(self) -> None:
        path = self.out / STUDY_FILE
        now = asdict(self.settings)
        saved = self._saved_settings()
        if saved is not None:
            changed = _changed_keys(saved, now)
            if changed:
                raise EdgebvitError(
                    f"{self.out} was started with other settings ({', '.join(changed)} differ); resume it with "
                    f"the same options or choose a new --out")
            # More seeds or rungs extend the study; the table covers what this invocation asks for.
            now["seeds"] = sorted(set(saved.get("seeds", [])) | set(now["seeds"]))
            now["rungs"] = list(dict.fromkeys([*saved.get("rungs", []), *now["rungs"]]))
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, now)

    def _cli(self, *args: str, ok: Sequence[int] = (0,)) -> int:
        cmd = [self.python, "-m", "edgebvit", *args]
        self.echo(f"=== edgebvit {' '.join(shlex.quote(a) for a in args)}")
        rc = subprocess.run(cmd).returncode
        if rc not in ok:
            raise EdgebvitError(f"`edgebvit {args[0]}` failed with exit status {rc} (output above); "
                                f"fix the cause and rerun the same study command to resume")
        return rc

    def _train(self, run_dir: Path, model: str, args: Sequence[str]) -> None:
        if (run_dir / "summary.json").is_file():
            self.echo(f"=== {run_dir}: finished, kept")
            return
        if (run_dir / "config.json").is_file():  # killed: continue at its last finished epoch (or epoch 0)
            self._cli("train", "--resume", str(run_dir))
            return
        if run_dir.exists():  # killed before its config was written: nothing to keep
            shutil.rmtree(run_dir)
        self._cli("train", "--model", model, *args, "--out", str(run_dir))

    def teacher_dir(self) -> Optional[Path]:
        s = self.settings
        if s.teacher:
            return Path(s.teacher)
        if s.teacher_model:
            return self.out / TEACHER_DIR
        return None

    def _teacher(self) -> Optional[Path]:
        s = self.settings
        t = self.teacher_dir()
        if t is not None and s.teacher_model and not s.teacher:
            self._train(t, s.teacher_model, [*s.data, "--epochs", str(s.teacher_epochs or s.epochs),
                                             *self._batch_args(), "--seed", str(s.seeds[0])])
        if t is not None and not (t / "summary.json").is_file():
            raise EdgebvitError(f"teacher {t} is not a finished run directory (no summary.json)")
        return t

    def _batch_args(self) -> List[str]:
        return [] if self.settings.batch_size is None else ["--batch-size", str(self.settings.batch_size)]

    def rung_args(self, rung: Rung, seed: int, teacher: Optional[Path]) -> List[str]:
        s = self.settings
        args = [*s.data, "--epochs", str(s.epochs), *self._batch_args(), "--seed", str(seed)]
        if s.lr is not None:
            args += ["--lr", repr(s.lr)]
        args += list(rung.train)  # a rung's own options come later and win
        for kv in rung.sets:
            args += ["--set", kv]
        args += [f"parity_images={s.eval_images}", *s.overrides]
        distil = rung.distill if rung.distill is not None else teacher is not None
        if distil:
            if teacher is None:
                raise EdgebvitError(f"rung {rung.key!r} distils from a teacher: pass --teacher RUN_DIR or "
                                    f"--teacher-model NAME")
            args += ["--teacher", str(teacher), *s.distill]
        return args

    def run_dir(self, rung: Rung, seed: int) -> Path:
        return self.out / rung.key / f"seed{seed}"

    def run(self) -> List[Dict]:
        start = time.perf_counter()
        self._check_settings()
        teacher = self._teacher()
        rows = []
        for seed in self.settings.seeds:
            for rung in self.ladder.rungs:
                run_dir = self.run_dir(rung, seed)
                self._train(run_dir, rung.model, self.rung_args(rung, seed, teacher))
                if not ((run_dir / "model.export.json").is_file() and (run_dir / "model.tflite").is_file()):
                    self._cli("export", str(run_dir), "--tflite", "--parity-images", str(self.settings.eval_images),
                              ok=(0, PARITY_EXIT))
                rows.append(run_row(run_dir, rung, seed))
        self.write(rows, teacher, time.perf_counter() - start)
        return rows

    def tabulate(self) -> List[Dict]:
        """Write the table and plot from the runs already finished and exported in the folder (any
        seeds, the ladder's rungs), training nothing: safe while the study itself still runs."""
        saved = self._saved_settings()
        if saved is None:
            raise EdgebvitError(f"{self.out} has no {STUDY_FILE}: not a study folder (run the study first)")
        self.settings = StudySettings(**{k: v for k, v in saved.items() if k in StudySettings.__dataclass_fields__})
        rows = []
        for rung in self.ladder.rungs:
            seeds = sorted(int(d.name[4:]) for d in (self.out / rung.key).glob("seed*") if d.name[4:].isdigit())
            for seed in seeds:
                d = self.run_dir(rung, seed)
                if all((d / f).is_file() for f in ("summary.json", "model.export.json")):
                    rows.append(run_row(d, rung, seed))
        if not rows:
            raise EdgebvitError(f"{self.out} has no finished and exported run of ladder {self.ladder.name!r} yet")
        t = self.teacher_dir()
        self.write(rows, t if t is not None and (t / "summary.json").is_file() else None, None)
        return rows

    # --------------------------------------------------------------------------------------
    def write(self, rows: List[Dict], teacher: Optional[Path], seconds: Optional[float]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.out / "table.csv", buf.getvalue())
        table = markdown_table(self.ladder, self.settings, rows, teacher, seconds)
        atomic_write_text(self.out / "table.md", table)
        atomic_write_bytes(self.out / "plot.png", plot_png(self.ladder, rows))
        self.echo("\n" + table)
        self.echo(f"wrote {self.out / 'table.md'}, {self.out / 'table.csv'}, {self.out / 'plot.png'}")


_SHAPE = re.compile(r"(\d+)x(\d+)x(\d+), (\d+) classes")


def run_row(run_dir: Path, rung: Rung, seed: int) -> Dict:
    """One CSV row from a finished run directory and its export report."""
    from edgebvit.models.profile import zoo_stats

    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    report = json.loads((run_dir / "model.export.json").read_text())
    ins, par = report["inspection"], report.get("parity") or {}
    macs = ins["macs"]
    m = _SHAPE.search(str(summary.get("data", "")))
    if not m:
        raise EdgebvitError(f"{run_dir}/summary.json does not state the input shape and classes; retrain this run")
    h, w, c, k = map(int, m.groups())
    stats = zoo_stats(config["model"], input_shape=(h, w, c), num_classes=k, **config.get("model_overrides", {}))

    def pct(v):
        return round(100 * v, 2) if v is not None else None

    return {
        "rung": rung.key, "label": rung.label, "model": config["model"], "seed": seed,
        "binary_params": stats.binary_params, "float_params": stats.float_params,
        "binary_macs": macs["by_precision"]["binary"],
        "float_macs": macs["by_precision_excluding_attention"]["float"], "attention_macs": macs["attention"],
        "flatbuffer_kib": round(ins["file_bytes"] / 1024, 1), "operators": sum(ins["ops_per_block"].values()),
        "keras_test_accuracy": pct(par.get("keras_top1")), "flatbuffer_test_accuracy": pct(par.get("lce_top1")),
        "top1_agreement": pct(par.get("top1_agreement")), "eval_images": par.get("samples"),
        "train_test_accuracy": pct(summary.get("test_accuracy")), "test_images": summary.get("test_images"),
        "optimizer_steps": summary.get("optimizer_steps"),
        "train_seconds": round(summary.get("train_seconds_this_session") or 0.0),
        "paper_imagenet_top1": rung.paper,
    }


def _spread(values: List[Optional[float]]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} +- {statistics.stdev(vals):.2f}"


def _by_rung(ladder: Ladder, rows: List[Dict]) -> List[tuple]:
    return [(r, [x for x in rows if x["rung"] == r.key]) for r in ladder.rungs if any(x["rung"] == r.key for x in rows)]


def markdown_table(ladder: Ladder, s: StudySettings, rows: List[Dict], teacher: Optional[Path],
                   seconds: Optional[float]) -> str:
    from edgebvit.training.config import AUTO_BATCH_RULE  # loads TensorFlow, as run_row's zoo_stats does

    lines = [f"# {ladder.name}: {ladder.description}", "",
             "| rung | model | params binary / float | MACs binary / float / attention | flatbuffer | operators | "
             "seeds | Keras test % | flatbuffer test % | agreement (lowest) | Keras, whole test split % | "
             "paper ImageNet top-1 |",
             "|" + "---|" * 12]
    for rung, runs in _by_rung(ladder, rows):
        r = runs[0]
        agree = [x["top1_agreement"] for x in runs if x["top1_agreement"] is not None]
        lines.append(
            f"| {rung.label} | {r['model']} | {r['binary_params'] / 1e6:.2f} M / {r['float_params'] / 1e3:.1f} k | "
            f"{r['binary_macs'] / 1e6:.1f} M / {r['float_macs'] / 1e6:.2f} M / {r['attention_macs'] / 1e6:.2f} M | "
            f"{r['flatbuffer_kib']} KiB | {r['operators']} | {len(runs)} | "
            f"{_spread([x['keras_test_accuracy'] for x in runs])} | "
            f"{_spread([x['flatbuffer_test_accuracy'] for x in runs])} | "
            f"{(str(min(agree)) + '%') if agree else '-'} | {_spread([x['train_test_accuracy'] for x in runs])} | "
            f"{rung.paper if rung.paper is not None else '-'} |")
    seeds = sorted({x["seed"] for x in rows})
    t = ""
    if teacher is not None:
        acc = json.loads((teacher / "summary.json").read_text()).get("test_accuracy")
        t = f"; teacher {teacher.name} ({acc:.2%} test) with {' '.join(s.distill) or 'its defaults'} where a rung distils"
    n_eval = sorted({x["eval_images"] for x in rows if x["eval_images"]})
    lines += ["", f"Budget: `{' '.join(s.data)}`, {s.epochs} epochs, batch "
                  f"{s.batch_size or 'auto (' + AUTO_BATCH_RULE + ')'}"
                  f"{', lr ' + repr(s.lr) if s.lr is not None else ''} (a rung's own options override), seeds "
                  f"{', '.join(map(str, seeds))} (mean +- sample std){t}. Keras and flatbuffer accuracies on the same "
                  f"{'/'.join(map(str, n_eval)) or '?'} held-out test images (export's parity gate); sizes and counts "
                  f"of the first seed's run. The whole-split column is each run's own Keras evaluation on all "
                  f"{'/'.join(sorted({str(x['test_images']) for x in rows}))} test images after training. "
                  + (f"This invocation took {seconds:.0f} s." if seconds is not None
                     else f"Tabulated from the {len(rows)} finished runs in the folder (--table-only).")]
    return "\n".join(lines) + "\n"


def plot_png(ladder: Ladder, rows: List[Dict]) -> bytes:
    """Accuracy per rung: Keras and flatbuffer mean with the seeds' spread, the paper's number on a
    second axis where it has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _by_rung(ladder, rows)
    xs = list(range(len(groups)))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups)), 4.2), dpi=110)
    for key, name, dx, marker in (("keras_test_accuracy", "Keras", -0.08, "o"),
                                  ("flatbuffer_test_accuracy", "flatbuffer (LCE)", 0.08, "s")):
        means, errs = [], []
        for _, runs in groups:
            vals = [x[key] for x in runs if x[key] is not None]
            means.append(statistics.mean(vals) if vals else math.nan)
            errs.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        ax.errorbar([x + dx for x in xs], means, yerr=errs, marker=marker, capsize=3, linestyle="-", label=name)
    for i, (_, runs) in enumerate(groups):
        vals = [x["keras_test_accuracy"] for x in runs if x["keras_test_accuracy"] is not None]  # every seed
        ax.scatter([i - 0.08] * len(vals), vals, s=9, color="grey", alpha=0.6, zorder=3)
    ax.set_ylabel("test accuracy, this study (%)")
    ax.set_xticks(xs)
    ax.set_xticklabels([r.label for r, _ in groups], rotation=25, ha="right", fontsize=8)
    papers = [(i, r.paper) for i, (r, _) in enumerate(groups) if r.paper is not None]
    if papers:
        ax2 = ax.twinx()
        ax2.plot([i for i, _ in papers], [p for _, p in papers], "k--", marker="^", label="paper, ImageNet")
        ax2.set_ylabel("paper ImageNet-1k top-1 (%)")
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    seeds = sorted({x["seed"] for x in rows})
    ax.set_title(f"{ladder.name} ladder, {len(seeds)} seed(s)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
