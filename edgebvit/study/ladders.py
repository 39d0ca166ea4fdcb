"""Named ladders for `edgebvit study`: each rung is one run configuration (docs/study.md).

A rung names a registered model, model overrides (`--set`), training options and the paper's
ImageNet top-1 where the paper has one. The BinaryViT ladder is the paper's ablation table
(docs/papers.md 1.6: binary DeiT-S 48.5 -> +GAP 56.4 -> +multi-pool 60.2 -> +affine 61.8 ->
+pyramid 67.7 -> float patch merging 70.6) at the sizes the registry holds; the BHViT ladder
switches off one of the paper's components at a time (docs/papers.md 2); the `recipe` ladder
trains binaryvit_tiny_32 with one short-budget training option per rung, beside the float CNN.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from edgebvit.errors import EdgebvitError


@dataclass(frozen=True)
class Rung:
    """One run configuration of a ladder.

    key: folder name under the study (STUDY/<key>/seed<S>); label: the table's row name;
    model: a registered name; sets: `--set k=v` model overrides; train: extra `edgebvit train`
    arguments (options or KEY=VALUE); distill: None = distil when the study has a teacher,
    True = this rung needs the teacher, False = never distil (a float reference); paper: the
    paper's ImageNet-1k top-1 for this row, if it reports one.
    """

    key: str
    label: str
    model: str
    sets: Tuple[str, ...] = ()
    train: Tuple[str, ...] = ()
    distill: Optional[bool] = None
    paper: Optional[float] = None


@dataclass(frozen=True)
class Ladder:
    name: str
    description: str
    rungs: Tuple[Rung, ...] = field(default_factory=tuple)


def _binaryvit(size: str, name: str) -> Ladder:
    """docs/papers.md 1.6 rows 1-6; `size` is tiny_32, small_32 or the ImageNet names (s_224)."""
    if size == "s_224":
        names = ["binaryvit_deit_s_cls_224", "binaryvit_deit_s_gap_224", "binaryvit_deit_s_pool_224",
                 "binaryvit_deit_s_224", "binaryvit_pyramid_s_224", "binaryvit_pyramid_s_224_fpmerge"]
    else:
        names = [f"binaryvit_{size}_cls", f"binaryvit_{size}_gap", f"binaryvit_{size}_pool",
                 f"binaryvit_{size}", f"binaryvit_pyramid_{size}", f"binaryvit_pyramid_{size}_fpmerge"]
    rows = [("cls", "1 binary DeiT (class token)", 48.5), ("gap", "2 + global average pooling", 56.4),
            ("pool", "3 + multi-branch pooling", 60.2), ("affine", "4 + affine (LayerScale)", 61.8),
            ("pyramid", "5 + pyramid", 67.7), ("fpmerge", "6 + float patch merging", 70.6)]
    rungs = tuple(Rung(key, label, model, paper=paper) for (key, label, paper), model in zip(rows, names))
    return Ladder(name, f"BinaryViT's ablation ladder (paper Table, docs/papers.md 1.6), {size} models", rungs)


def _bhvit() -> Ladder:
    """docs/papers.md 2: the full bhvit_tiny_32, then one component changed per rung."""
    m = "bhvit_tiny_32"
    rungs = (
        Rung("full", "BHViT (official switches)", m),
        Rung("no_shift", "- shift MLP branches", m, sets=("shift3=false", "shift5=false")),
        Rung("qd_fixed", "QD: paper thermometer, not learnable", m, sets=("qd_form=fixed",)),
        Rung("qd_gsb", "QD: official --gsb", m, sets=("qd_form=gsb",)),
        Rung("reg", "+ L_re regulariser (last 10%)", m,
             train=("optim.regularizer_weight=0.1", "optim.regularizer_start=0.9")),
        Rung("fpds", "+ float downsampling", m, sets=("fp_downsample=true",)),
    )
    return Ladder("bhvit", "BHViT's components one at a time on bhvit_tiny_32 (docs/papers.md 2)", rungs)


def _recipe() -> Ladder:
    """Short-budget training options for binaryvit_tiny_32 (docs/study.md), the float CNN beside.

    `defaults` is what `edgebvit train` does with no options: on a short budget (fewer than 500
    steps at batch 128) that is batch 32, the rule this ladder measured; the `*_b128` rungs are
    the earlier fixed default. Every other rung changes one option from `defaults`.
    """
    m = "binaryvit_tiny_32"
    b128 = ("--batch-size", "128")
    rungs = (
        Rung("float_cnn_b128", "float cnn_small_32, batch 128", "cnn_small_32", train=b128, distill=False),
        Rung("float_cnn", "float cnn_small_32, defaults", "cnn_small_32", distill=False),
        Rung("b128", "batch 128 (earlier default)", m, train=b128, distill=False),
        Rung("b128_lr3e-3", "batch 128, lr 3e-3", m, train=(*b128, "--lr", "3e-3"), distill=False),
        Rung("b64", "batch 64", m, train=("--batch-size", "64"), distill=False),
        Rung("defaults", "defaults (auto: batch 32 here)", m, distill=False),
        Rung("b16", "batch 16", m, train=("--batch-size", "16"), distill=False),
        Rung("lr2e-3", "defaults + lr 2e-3", m, train=("--lr", "2e-3"), distill=False),
        Rung("warmup", "defaults + lr 2e-3, 0.5-epoch warm-up", m,
             train=("--lr", "2e-3", "--warmup-epochs", "0.5"), distill=False),
        Rung("torch_init", "defaults + PyTorch-default init", m, sets=("init=torch",), distill=False),
        Rung("two_stage", "defaults + two-stage (1 epoch float weights)", m, train=("optim.stage1_epochs=1",),
             distill=False),
        Rung("spt_lsa", "defaults + SPT/LSA", "binaryvit_tiny_32_spt_lsa", distill=False),
        Rung("bop", "defaults + Bop", m, train=("--optimizer", "bop"), distill=False),
        Rung("distill", "defaults + hard KD from the float CNN", m, distill=True),
    )
    return Ladder("recipe", "short-budget training options for binaryvit_tiny_32 (docs/study.md)", rungs)


LADDERS: Dict[str, Ladder] = {
    lad.name: lad for lad in (
        _binaryvit("tiny_32", "binaryvit"), _binaryvit("small_32", "binaryvit_small"),
        _binaryvit("s_224", "binaryvit_imagenet"), _bhvit(), _recipe(),
    )
}


def get_ladder(name: str, rungs: Tuple[str, ...] = ()) -> Ladder:
    """The named ladder, optionally cut to the rung keys in `rungs` (in the ladder's order)."""
    try:
        ladder = LADDERS[name]
    except KeyError:
        raise EdgebvitError(f"unknown ladder {name!r}; choose from {', '.join(LADDERS)} (edgebvit study --list)") from None
    if not rungs:
        return ladder
    known = {r.key for r in ladder.rungs}
    unknown = [k for k in rungs if k not in known]
    if unknown:
        raise EdgebvitError(f"ladder {name!r} has no rung {', '.join(map(repr, unknown))}; "
                          f"its rungs: {', '.join(r.key for r in ladder.rungs)}")
    return Ladder(ladder.name, ladder.description, tuple(r for r in ladder.rungs if r.key in rungs))
