"""The suites and budgets of `detok bench reproduce`: which tokenizer variants a suite compares, and the presets and
step counts every cell of a run gets (the data; the runner is `reproduce.py`).

Paper: "Latent Denoising Makes Good Visual Tokenizers" (Yang et al., arXiv:2507.15856).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from detok.config import ConfigError, NonNegativeInt, PositiveInt, apply_overrides, check_fields

# --------------------------------------------------------------------------------------------------
# Suites and budgets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerVariant:
    """One tokenizer row: a name, its corruption overrides (model.corruption.*) and the seeds to train.

    Attributes:
        tokenizer: the tokenizer preset this row trains (None: the budget's `tokenizer`); a tiny-budget run uses its
            `-tiny` twin.
        finetune_from: the name of another variant with the same overrides whose trained tokenizer (the cell
            `<finetune_from>-seed<k>` of the same work folder, trained there first if missing) gets its decoder
            fine-tuned on clean latents for `Budget.finetune_images` images (paper App. A.3: encoder frozen,
            masking and noise off); None trains from scratch. A resolution fine-tuning preset (`tokenizer`
            detok-fmnist64) starts from a tokenizer of its base preset (detok-fmnist32) and trains for 1/8 of its
            images (App. A.3: 25 epochs after 200), with its own recipe (half the lr, GAN from the start).
        finetune: what `finetune_from` trains: "decoder" (above) or "full", every weight (App. A.3's full
            fine-tuning to 512 px).
        finetune_overrides: overrides of the fine-tuning run alone (the base tokenizer's spec stays the
            `finetune_from` cell's): MAETok's anneal span, the corruption kept by a decoder-only arm.
        generator_init: (generator, base generator) pairs: this cell's `generator` starts from the `finetune_from`
            cell's trained `base generator` (`init_from`, at another latent grid: App. A.3's MAR-L 256 → 512).
        tokenizer_scale: multiplies the budget's `tokenizer_images` for this variant's tokenizer.
        generators: which of the budget's generators (GENERATORS) are trained and scored on its latents.
        stages: a tokenizer trained in stages (AlignTok's three): each (share of the tokenizer budget, overrides)
            is one run, started from the previous stage's (`init_from`); the last stage is the cell's tokenizer.
            Overrides may name `{teacher}`, the folder of the suite's offline teacher (trained once per --work).
    """

    name: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    paper: dict[str, float] = field(default_factory=dict)  # the paper's ImageNet numbers, for the table
    tokenizer: str | None = None
    finetune_from: str | None = None
    tokenizer_scale: int = 1
    generators: tuple[str, ...] = ("sit", "mar")
    stages: tuple[tuple[float, tuple[str, ...]], ...] = ()
    finetune: Literal["decoder", "full"] = "decoder"
    finetune_overrides: tuple[str, ...] = ()
    generator_init: tuple[tuple[str, str], ...] = ()


CONTINUOUS_GENERATORS = ("sit", "mar", "dit", "lightningdit", "randomar", "rasterar")
VQ_GENERATORS = ("randomar_vq", "rasterar_vq")
PEER_GENERATORS = ("sit", "lightningdit", "mar")
AR_GENERATORS = ("mar", "randomar", "rasterar", *VQ_GENERATORS)
T2I_GENERATORS = ("t2i_sit", "t2i_mar")  # text-conditioned: trained and scored by bench/t2i.py (eval/t2i.py)


def _corruption(gamma: float, mask: float, *extra: str) -> tuple[str, ...]:
    return (f"model.corruption.noise_gamma={gamma}", f"model.corruption.mask_max={mask}", *extra)


# Table 2 (ImageNet 256, FID with CFG; MAR-B / SiT-B).
_TABLE2 = (
    TokenizerVariant("baseline", _corruption(0, 0), (0, 1), {"MAR-B": 3.31, "SiT-B": 6.97}),
    TokenizerVariant("masking", _corruption(0, 0.7), (0,), {"MAR-B": 2.90, "SiT-B": 6.43}),
    TokenizerVariant("noise", _corruption(3, 0), (0,), {"MAR-B": 2.77, "SiT-B": 5.56}),
    TokenizerVariant("joint", _corruption(3, 0.7), (0, 1), {"MAR-B": 2.65, "SiT-B": 5.50}),
    # "+Extended" (Sec. 5.1.3: base-size encoder, 200 epochs, GAN from epoch 100): here the joint tokenizer trained
    # 3× longer with the PatchGAN from the midpoint, its encoder unchanged. One extra cell: 30.9 min at `cpu` against
    # 21.7-24.9 for the others (tokenizer 12.1 vs 3.1 min; docs/results/table2-r4).
    TokenizerVariant("joint-extended", _corruption(3, 0.7, "loss.gan_weight=0.1", "loss.gan_start_frac=0.5"),
                     paper={"MAR-B": 2.43, "SiT-B": 5.13}, tokenizer_scale=3),
)  # fmt: skip

# AlignTok's own recipe where it departs from the FMNIST one (App. A; the GAN and LPIPS stay off as in every FMNIST
# row): Eq. 1's L1 reconstruction, one constant learning rate a stage without warm-up. The `peers` run of 2026-12-02
# (commit 0b81582) trained the row without these (MSE, 10% warm-up and cosine decay within each stage).
ALIGNTOK_FMNIST_RECIPE = ("loss.recon=l1", "train.lr_schedule=constant", "train.warmup_frac=0")

# The 1-D l-DeTok rows' warm-up, scaled to the budget as every suite scales the paper's epochs (AlignTok's stages,
# MAETok's anneal): App. A.6's 10 of 50 epochs → the first 20% of the run. The presets keep the paper's 10 epochs of
# data (`warmup_epochs=10`, issue #37), which every CPU budget (< 3 epochs of Fashion-MNIST) ends before: the row
# would then train bit for bit as its baseline (tests/test_tokenizer_families.py), a comparison of nothing.
_WARMUP_1D = ("model.corruption.warmup_epochs=null", "model.corruption.warmup_frac=0.2")

# MAETok's second auxiliary target is the suite's teacher, beside HOG (the peers suite)
_MAETOK = ('model.aux_targets=["hog", "detok:{teacher}"]', "model.aux_dims=[36, {teacher_dim}]")

SUITES: dict[str, tuple[TokenizerVariant, ...]] = {
    "table2": _TABLE2,
    # Table 1 / Fig. 2: noise only (no masking): the γ = 0 baseline, a γ sweep, additive vs interpolative at γ = 1
    # (Sec. 5.1.1: "we set the noise standard deviation to γ = 1.0 here"), and the τ distribution at γ = 3 (Table 1's
    # best, logit(τ) ~ N(0.8, 1)). Paper, ImageNet: γ ≈ 3 best; additive worse than interpolative; all τ schedules
    # beat the γ = 0 baseline. The paper column holds Table 1's numbers (Fig. 2 plots the other rows unprinted).
    "noise": (
        TokenizerVariant("g0", _corruption(0, 0), paper={"MAR-B": 3.31, "SiT-B": 6.97}),
        TokenizerVariant("interp-g1", _corruption(1, 0)),
        TokenizerVariant("interp-g3", _corruption(3, 0), paper={"MAR-B": 2.77, "SiT-B": 5.56}),
        TokenizerVariant("interp-g5", _corruption(5, 0)),
        TokenizerVariant("additive-g1", _corruption(1, 0, "model.corruption.noise_form=additive")),
        TokenizerVariant("interp-g3-logitnormal", _corruption(3, 0, "model.corruption.tau_dist=logit_normal"),
                         paper={"MAR-B": 2.58, "SiT-B": 5.44}),
    ),  # fmt: skip
    # Fig. 3a: masking only (no noise), the maximum ratio M of m = max(0, U(-0.1, M)).
    "mask": tuple(TokenizerVariant(f"m{m:g}", _corruption(0, m)) for m in (0, 0.3, 0.5, 0.7, 0.9)),
    # Fig. 3b: random vs constant ratio at M = 0.7, and the constant ratio with decoder fine-tuning (App. A.3). The
    # last cell is a control the paper does not run: the same decoder fine-tuning given to the random ratio, so that
    # constant + fine-tuning is also compared with random at equal decoder training.
    "mask-mode": (
        TokenizerVariant("random-0.7", _corruption(0, 0.7)),
        TokenizerVariant("constant-0.7", _corruption(0, 0.7, "model.corruption.mask_mode=constant")),
        TokenizerVariant("constant-0.7-ft", _corruption(0, 0.7, "model.corruption.mask_mode=constant"),
                         finetune_from="constant-0.7"),
        TokenizerVariant("random-0.7-ft", _corruption(0, 0.7), finetune_from="random-0.7"),
    ),  # fmt: skip
    # Table 4's claim: the gain of joint l-DeTok over the baseline holds for all six generators.
    "generators": (
        TokenizerVariant("baseline", _corruption(0, 0), generators=CONTINUOUS_GENERATORS),
        TokenizerVariant("joint", _corruption(3, 0.7), generators=CONTINUOUS_GENERATORS),
    ),
    # Table 2's two ends alone, for longer budgets (`--budget cpu-long`): does the SiT gain / MAR reversal of the
    # short regime hold as tokenizer and generator training grow? The same variants as table2's (so the cells of a
    # table2 run in the same --work folder at the same budget are shared).
    "baseline-joint": tuple(v for v in _TABLE2 if v.name in ("baseline", "joint")),
    # Follow-up of table2 on CPU (run in the same --work folder to reuse its tokenizers), SiT only: the joint
    # tokenizer reconstructs worst at the table2 budget; does decoder fine-tuning (App. A.3) or a doubled
    # tokenizer budget change the ranking? Each change is given to the baseline as well. 76 min on 2 cores.
    "table2-followup": (
        TokenizerVariant("baseline-ft", _corruption(0, 0), (0, 1), finetune_from="baseline", generators=("sit",)),
        TokenizerVariant("joint-ft", _corruption(3, 0.7), (0, 1), finetune_from="joint", generators=("sit",)),
        TokenizerVariant("baseline-2x", _corruption(0, 0), tokenizer_scale=2, generators=("sit",)),
        TokenizerVariant("joint-2x", _corruption(3, 0.7), tokenizer_scale=2, generators=("sit",)),
    ),
    # The tokenizer families of l-DeTok's App. A.5–A.7, each as baseline vs l-DeTok with the paper's corruption for
    # that family. Paper numbers: ImageNet FID with CFG (App. A.5 for the CNN; Table 8 for 1-D, K = 32 and 128,
    # whose K·C / grid ratios of 1/8 and 1/2 the FMNIST K = 8 and 32 share; Table 9 for VQ), read from the
    # extracted paper text.
    "variants": (
        TokenizerVariant("cnn-baseline", ("model.corruption.noise_gamma=0",), paper={"MAR-B": 3.32, "SiT-B": 7.11},
                         tokenizer="cnn-fmnist32"),
        TokenizerVariant("cnn-ldetok", ("model.corruption.noise_gamma=3",), paper={"MAR-B": 2.82, "SiT-B": 5.62},
                         tokenizer="cnn-fmnist32"),
        TokenizerVariant("1d-k8-baseline", ("model.corruption.noise_gamma=0",), paper={"MAR-B": 5.22, "SiT-B": 6.99},
                         tokenizer="detok1d-fmnist32-k8"),
        TokenizerVariant("1d-k8-ldetok", ("model.corruption.noise_gamma=2", *_WARMUP_1D),
                         paper={"MAR-B": 5.51, "SiT-B": 7.02}, tokenizer="detok1d-fmnist32-k8"),
        TokenizerVariant("1d-k32-baseline", ("model.corruption.noise_gamma=0",),
                         paper={"MAR-B": 3.92, "SiT-B": 7.95}, tokenizer="detok1d-fmnist32-k32"),
        TokenizerVariant("1d-k32-ldetok", ("model.corruption.noise_gamma=2", *_WARMUP_1D),
                         paper={"MAR-B": 3.14, "SiT-B": 6.20}, tokenizer="detok1d-fmnist32-k32"),
        TokenizerVariant("vq-baseline", ("model.corruption.mask_max=0",), tokenizer="detokvq-fmnist32",
                         paper={"RandomAR (VQ)": 8.48, "RasterAR (VQ)": 5.29}, generators=VQ_GENERATORS),
        TokenizerVariant("vq-ldetok", ("model.corruption.mask_max=0.95",), tokenizer="detokvq-fmnist32",
                         paper={"RandomAR (VQ)": 7.03, "RasterAR (VQ)": 4.91}, generators=VQ_GENERATORS),
    ),
    # Table 4 at FMNIST scale: l-DeTok (with and without its distillation, App. A.4) against the semantics-distilled
    # peers MAETok and VA-VAE, AlignTok, and the plain AE / CNN baselines, each judged by SiT, LightningDiT and MAR.
    # Every teacher is the offline, label-free MAE the suite trains first (`{teacher}`, `{teacher_dim}`): never a
    # label-trained network. Paper numbers: Table 4's FIDs with CFG (the CNN baseline's are MAR-VAE's; the AE
    # baseline and AlignTok are not in it). AlignTok's stages take 6/22, 11/22 and 5/22 of the tokenizer budget (the
    # paper's 6/11/5 epochs) and stage 2 a tenth of the learning rate (the paper's 1e-5 after 1e-4). MAETok is shown
    # as trained (`maetok`: mask modelling only, Table 1a's "AE + MM") and with the paper's decoder fine-tuning
    # (`maetok-ft`, Sec. 3 "Decoder Fine-Tuning": encoder frozen, auxiliary decoders dropped, for `finetune_images`
    # more images, the mask ratio annealed 0.6 → 0 over 25 steps: 1/10 of the 250 steps of the `cpu` budget's main
    # run, as the paper's 50K of 500K iterations, Sec. 4); the paper's Table 4 numbers are the fine-tuned MAETok's.
    "peers": (
        TokenizerVariant("ae-baseline", _corruption(0, 0), generators=PEER_GENERATORS),
        TokenizerVariant("ldetok", _corruption(3, 0.7), generators=PEER_GENERATORS,
                         paper={"MAR-B": 2.43, "SiT-B": 5.13, "LightningDiT-B": 3.63}),
        TokenizerVariant("ldetok-distill", ("model.distill.teacher=detok:{teacher}",
                                            "model.distill.teacher_dim={teacher_dim}"),
                         tokenizer="detok-fmnist32-distill", generators=PEER_GENERATORS,
                         paper={"MAR-B": 2.52, "SiT-B": 3.40, "LightningDiT-B": 2.18}),
        TokenizerVariant("maetok", _MAETOK, tokenizer="maetok-fmnist32", generators=PEER_GENERATORS),
        TokenizerVariant("maetok-ft", _MAETOK, tokenizer="maetok-fmnist32", generators=PEER_GENERATORS,
                         paper={"MAR-B": 6.99, "SiT-B": 4.77, "LightningDiT-B": 3.92}, finetune_from="maetok",
                         finetune_overrides=("model.finetune_mask_steps=25",)),
        TokenizerVariant("aligntok", ("model.encoder=detok:{teacher}", "model.encoder_dim={teacher_dim}",
                                      *ALIGNTOK_FMNIST_RECIPE),
                         tokenizer="aligntok-fmnist32", generators=PEER_GENERATORS,
                         stages=((6 / 22, ("model.stage=1",)), (11 / 22, ("model.stage=2", "train.blr=4e-4")),
                                 (5 / 22, ("model.stage=3",)))),
        TokenizerVariant("vavae", ("model.vf.teacher=detok:{teacher}", "model.vf.teacher_dim={teacher_dim}"),
                         tokenizer="vavae-fmnist32", generators=PEER_GENERATORS,
                         paper={"MAR-B": 16.66, "SiT-B": 4.33, "LightningDiT-B": 2.86}),
        TokenizerVariant("cnn-baseline", ("model.corruption.noise_gamma=0",), tokenizer="cnn-fmnist32",
                         generators=PEER_GENERATORS, paper={"MAR-B": 3.71, "SiT-B": 6.26, "LightningDiT-B": 3.98}),
    ),
    # App. A.3 at FMNIST scale, 32 → 64 px (p = 4 stays, the grid grows from 8×8 to 16×16 as the paper's 16×16 → 32×32):
    # one 32-px l-DeTok tokenizer fine-tuned to 64 px in full or its decoder only, with detok-fmnist64's recipe (half
    # the lr, 1/8 of the base's images, GAN from the start); each scored by PSNR / rFID and by a SiT trained from
    # scratch on its 64-px latents; the full one also by a SiT fine-tuned from the 32-px cell's (for half the images,
    # as the paper's 200 fine-tuning epochs after 400 from scratch). Paper (ImageNet 512): decoder-only reconstructs
    # better (PSNR 26.3 vs 24.9, rFID 0.92 vs 0.86) but full fine-tuning generates better (SiT 5.98 vs 6.32).
    # Corruption: `64px-full` keeps the 32-px tokenizer's l-DeTok training (γ = 3, M = 0.7, posterior sampled);
    # `64px-decoder` trains the decoder on clean latents (noise, masking and posterior sampling off, as App. A.3's
    # decoder fine-tuning), so it differs from the full arm in two things; `64px-decoder-corrupted` keeps the full
    # arm's corruption and differs in what is frozen only. The paper does not say which its decoder-only arm did, so
    # both carry its number.
    "resolution": (
        TokenizerVariant("32px", (), generators=("sit",)),
        TokenizerVariant("64px-full", (), paper={"SiT-B": 5.98}, tokenizer="detok-fmnist64", finetune_from="32px",
                         finetune="full", generators=("sit", "sit_ft"), generator_init=(("sit_ft", "sit"),)),
        TokenizerVariant("64px-decoder", (), paper={"SiT-B": 6.32}, tokenizer="detok-fmnist64", finetune_from="32px",
                         generators=("sit",)),
        TokenizerVariant("64px-decoder-corrupted", (), paper={"SiT-B": 6.32}, tokenizer="detok-fmnist64",
                         finetune_from="32px", generators=("sit",), finetune_overrides=("finetune_corruption=true",)),
    ),
    # Table 7 (Sec. 5.4, App. C) at FMNIST scale: baseline vs l-DeTok under T2I-SiT and T2I-MAR, conditioned on the
    # attribute captions of the suite's images through detok's label-free offline text encoder (both made once per
    # --work; bench/t2i.py); FID against the test images and text alignment on seen and held-out caption combinations
    # (docs/text-to-image.md). The rows are named as table2's: run with table2's --work to reuse its tokenizers and
    # latents. Paper: MS-COCO FID with CFG; its other rows are other tokenizers (VA-VAE, SD-VAE, MAR-VAE), not the
    # plain AE baseline.
    "t2i": (
        TokenizerVariant("baseline", _corruption(0, 0), (0, 1), generators=T2I_GENERATORS),
        TokenizerVariant("joint", _corruption(3, 0.7), (0, 1), {"T2I-SiT-B": 4.31, "T2I-MAR-B": 4.91},
                         generators=T2I_GENERATORS),
    ),
}  # fmt: skip


# Suites whose every cell is also scored by a second, independently trained evaluator (another architecture and
# seed): tokenizers aligned to a teacher could otherwise win by matching one classifier's features.
SECOND_EVALUATOR = {"peers": "reference-resnet"}


@dataclass(frozen=True)
class Budget:
    """Presets and step counts of one suite run; every cell gets exactly the same.

    The `cpu` defaults are sized from measured runs on 2 CPU cores (2026-11-24). A first run (runs/bench-table2-v1)
    took ~24 min per cell; 16k latents for both generators, 8 Euler steps for SiT and 4 MAR steps for MAR (now the
    `cpu-v1` budget) brought a cell to 19.5–21.2 min when the machine was otherwise idle (cells of two runs), i.e.
    ~125 min for the 6 cells of table2: over the 2-hour budget. The MAR evaluation is the largest step (~520 s of a
    cell's ~1,250 s; SiT's ~235 s). Hence, for `cpu`: MAR samples with 3 MAR steps and 8 DiffLoss steps (on two
    trained MARs of that run, 1,000 samples at CFG 3: 12–22% faster, FID 46.9 → 44.8 and 61.6 → 60.5, i.e. not
    worse; recall 0.01–0.02 lower; docs/benchmarks.md), MAR trains on 12k latents instead of 16k (its column is
    dominated by seed spread at either size; the effect of this trim on MAR's ranking of tokenizers is untested),
    and the CFG search uses 250 samples per scale instead of 500 (the search FIDs on 500 were within 1 point of the
    final 10k FIDs). The tokenizers, SiT and the 10k final samples are unchanged. Measured: 107.8 min for the 6
    cells of table2, uncontended (2026-11-25, docs/results/table2-r3).
    """

    tokenizer: str = "detok-fmnist32"
    tokenizer_images: PositiveInt = 16_000
    stats_images: PositiveInt = 5_000
    recon_images: PositiveInt = 5_000
    cache_images: PositiveInt = 8_000
    sit: str = "sit-fmnist32"
    sit_images: PositiveInt = 16_000
    sit_sampling: tuple[str, ...] = ("flow.sampler=euler", "flow.sample_steps=8")
    # the resolution suite's SiT fine-tuned from a 32-px cell's SiT (the same preset; half of SiT's images)
    sit_ft: str = "sit-fmnist32"
    sit_ft_images: PositiveInt = 8_000
    sit_ft_sampling: tuple[str, ...] = ("flow.sampler=euler", "flow.sample_steps=8")
    mar: str = "mar-fmnist32"
    mar_images: PositiveInt = 12_000
    mar_sampling: tuple[str, ...] = ("num_iter=3", "diffloss.sample_steps=8")
    # The other four generators of the `generators` suite; their sampling is shortened as SiT's and MAR's are
    # (the same cost per sample order), untimed until that suite runs.
    dit: str = "dit-fmnist32"
    dit_images: PositiveInt = 16_000
    dit_sampling: tuple[str, ...] = ("diffusion.sample_steps=25",)
    lightningdit: str = "lightningdit-fmnist32"
    lightningdit_images: PositiveInt = 16_000
    lightningdit_sampling: tuple[str, ...] = ("flow.sample_steps=8",)
    randomar: str = "randomar-fmnist32"
    randomar_images: PositiveInt = 12_000
    randomar_sampling: tuple[str, ...] = ("diffloss.sample_steps=8",)
    rasterar: str = "rasterar-fmnist32"
    rasterar_images: PositiveInt = 12_000
    rasterar_sampling: tuple[str, ...] = ("diffloss.sample_steps=8",)
    randomar_vq: str = "randomar-vq-fmnist32"
    randomar_vq_images: PositiveInt = 16_000
    randomar_vq_sampling: tuple[str, ...] = ()
    rasterar_vq: str = "rasterar-vq-fmnist32"
    rasterar_vq_images: PositiveInt = 16_000
    rasterar_vq_sampling: tuple[str, ...] = ()
    # The t2i suite: its generators (sampling shortened as SiT's and MAR's), its offline text encoder, and the numbers
    # of test captions its CFG search and final scores sample. Estimated from timed steps (docs/text-to-image.md): a
    # T2I-SiT step costs ~1.9× a SiT step (32 tokens instead of 16) and its samples ~2.1×; T2I-MAR ~1.1× and ~1.0×
    # MAR's; so a cell takes ~19 min and the suite's 4 cells plus the text encoder ~80 min on 2 idle cores.
    t2i_sit: str = "t2i-sit-fmnist32"
    t2i_sit_images: PositiveInt = 24_000
    t2i_sit_sampling: tuple[str, ...] = ("flow.sampler=euler", "flow.sample_steps=8")
    t2i_mar: str = "t2i-mar-fmnist32"
    t2i_mar_images: PositiveInt = 16_000
    t2i_mar_sampling: tuple[str, ...] = ("num_iter=3", "diffloss.sample_steps=8")
    text_encoder: str = "text-encoder-fmnist32"
    text_encoder_images: PositiveInt = 300_000
    t2i_search_num: PositiveInt = 500
    t2i_final_num: PositiveInt = 5_000
    finetune_images: PositiveInt = 8_000
    teacher: str = "mae-teacher-fmnist32"  # the offline teacher of suites whose variants name `{teacher}`
    teacher_images: PositiveInt = 64_000
    search_cfgs: tuple[float, ...] = (1.5, 3.0)
    no_cfg_num: NonNegativeInt = 2_000  # samples scored without guidance (the paper's "w/o CFG" columns); 0: off
    no_cfg_temperatures: tuple[float, ...] = (0.9, 1.0, 1.1)  # swept without guidance for the AR generators only
    # Temperatures the AR generators' CFG search tries at every scale, the final at the best pair (empty: 1.0 only,
    # the paper's protocol with guidance, App. A.2, which suits converged models)
    ar_search_temperatures: tuple[float, ...] = ()
    search_num: PositiveInt = 250
    final_num: PositiveInt = 10_000
    sample_batch: PositiveInt = 250
    seed_offset: NonNegativeInt = 0  # added to every variant's seeds: a second run with new seeds (seed_offset=2: 2, 3)
    rows: tuple[str, ...] = ()  # only these variants of the suite, in the suite's order (empty: all of them)
    max_seeds: NonNegativeInt = 0  # at most this many of each variant's seeds, the first ones (0: all)
    # Only these of each variant's generators (None: all; []: the tokenizer alone): a cell too long for one session
    # runs in parts, each a --restore of the last (its tokenizer retrained where the work folder is gone).
    generators: tuple[str, ...] | None = None
    data: tuple[str, ...] = ()  # data config overrides, shared by every step (the smoke test uses an npz)
    train: tuple[str, ...] = ()  # train.* overrides for every training run (e.g. train.progress=false)
    tokenizer_train: tuple[str, ...] = ()  # train.* overrides for the tokenizers only (their schedule)
    tiny_twins: bool = False  # a variant's own tokenizer preset is replaced by its -tiny twin (the smoke budget)
    # "ROW=FOLDER": the cells of suite row ROW take an already-trained tokenizer (e.g. one `detok convert` made from
    # another codebase's checkpoint) instead of training one; `{seed}` in FOLDER is the cell's seed. Its latent
    # statistics are recomputed as a trained cell's; every later step is the row's own. Issue #36 runs table2's
    # steps on tokenizers trained by the official DeTok code this way.
    tokenizer_dirs: tuple[str, ...] = ()

    def tokenizer_dir(self, variant: TokenizerVariant, seed: int) -> Path | None:
        """The folder of the already-trained tokenizer `tokenizer_dirs` gives the cell (variant, seed), or None."""
        for entry in self.tokenizer_dirs:
            row, folder = entry.split("=", 1)
            if row == variant.name:
                return Path(folder.replace("{seed}", str(seed)))
        return None

    def tokenizer_for(self, variant: TokenizerVariant) -> str:
        """The tokenizer preset a variant trains under this budget."""
        if variant.tokenizer is None:
            return self.tokenizer
        return f"{variant.tokenizer}-tiny" if self.tiny_twins else variant.tokenizer

    def __post_init__(self):
        check_fields(self)
        for entry in self.tokenizer_dirs:
            row, sep, folder = entry.partition("=")
            if not (sep and row and folder):
                raise ConfigError("tokenizer_dirs", f"entries are ROW=FOLDER, got {entry!r}")
        rows = [e.partition("=")[0] for e in self.tokenizer_dirs]
        if len(set(rows)) != len(rows):
            raise ConfigError("tokenizer_dirs", f"names a row more than once: {rows}")


BUDGETS = {
    "cpu": Budget(),
    # The `cpu` budget of the first two table2 runs and the follow-up (docs/results/table2*, before the trim above):
    # rerun or resume those with --budget cpu-v1.
    "cpu-v1": Budget(
        mar_images=16_000, mar_sampling=("num_iter=4", "diffloss.sample_steps=10"), search_num=500, no_cfg_num=0
    ),
    # 4× the `cpu` training of tokenizers and generators (and 4× the cached latents, so a generator sees its data
    # as many times), the same evaluation: issue #14's question whether the short regime's rankings hold as training
    # grows. ~68 min a cell on 2 cores, estimated from timed `cpu` steps (docs/reproduce.md): one seed per session.
    # Every checkpoint is kept (one per 16k generator images, 6.4k tokenizer images), so benchmarks/*_curve.py can
    # score each run against its training length afterwards (#14: does the MAR gap close or flip with training?).
    "cpu-long": Budget(
        train=("train.keep_checkpoints=100",),
        tokenizer_images=64_000,
        cache_images=32_000,
        sit_images=64_000,
        mar_images=48_000,
        dit_images=64_000,
        lightningdit_images=64_000,
        randomar_images=48_000,
        rasterar_images=48_000,
    ),
    # The longer recipe of docs/results.md "FMNIST-32 quality" (issue #18), for table2's two ends, one seed each
    # (`--set rows=...` / `max_seeds=...` add rows and seeds; a restore keeps what ran). Measured in the probe
    # (2026-12-02, 1 thread each, 2 runs sharing the 2 cores): baseline tokenizers reach 33.7 dB / rFID 0.10 at
    # 128k images (joint: 28.0 dB / 1.12; 30.9 dB / 0.46 after decoder fine-tuning); SiT reaches gFID 2.45 at
    # CFG 1.5 with 93% class consistency after 240k images (1k samples; 1.40 and 94% after 480k, not worth its
    # doubled cost here). MAR's length is not chosen yet: 240k images, with a checkpoint kept every 32k images (and
    # the tokenizer's every 16k) so that benchmarks/*_curve.py draws each run's metric-vs-length curve afterwards.
    # Estimated per cell on 2 idle cores (from the `cpu` budget's measured step rates, not a timed run): ~2 h on the
    # AVX-512 Xeon, ~4.5 h on the AVX2 EPYC (docs/results.md); resumable across sessions (per step and checkpoint).
    "quality": Budget(
        tokenizer_images=128_000,
        tokenizer_train=("train.warmup_frac=0.02", "train.ema_decay=0.999", "train.ckpt_every=250"),
        train=("train.keep_checkpoints=100", "train.ckpt_every=500"),
        stats_images=20_000,
        recon_images=10_000,
        cache_images=60_000,
        sit_images=240_000,
        sit_sampling=("flow.sampler=heun", "flow.sample_steps=25"),
        mar_images=240_000,
        search_num=1_000,
        no_cfg_num=1_000,
        # MAR at 240k images samples best well below temperature 1 with CFG (1k samples at CFG 3: baseline 16.91 /
        # 11.70 / 9.34 / 8.24 at T 1.0 / 0.8 / 0.6 / 0.4, docs/results/table2-quality/mar-sampling-and-curve.json)
        ar_search_temperatures=(0.3, 0.4, 0.6, 1.0),
        rows=("baseline", "joint"),
        max_seeds=1,
    ),
    # For the test suite: tiny twins, a few dozen images, two samples per class.
    "smoke": Budget(
        tokenizer="detok-fmnist32-tiny",
        tokenizer_images=16,
        stats_images=16,
        recon_images=8,
        cache_images=16,
        sit="sit-fmnist32-tiny",
        sit_images=16,
        sit_sampling=("flow.sampler=euler", "flow.sample_steps=2"),
        sit_ft="sit-fmnist32-tiny",
        sit_ft_images=8,
        sit_ft_sampling=("flow.sampler=euler", "flow.sample_steps=2"),
        mar="mar-fmnist32-tiny",
        mar_images=16,
        mar_sampling=("num_iter=2", "diffloss.sample_steps=2"),
        dit="dit-fmnist32-tiny",
        dit_images=16,
        dit_sampling=("diffusion.sample_steps=2",),
        lightningdit="lightningdit-fmnist32-tiny",
        lightningdit_images=16,
        lightningdit_sampling=("flow.sample_steps=2",),
        randomar="randomar-fmnist32-tiny",
        randomar_images=16,
        randomar_sampling=("diffloss.sample_steps=2",),
        rasterar="rasterar-fmnist32-tiny",
        rasterar_images=16,
        rasterar_sampling=("diffloss.sample_steps=2",),
        randomar_vq="randomar-vq-fmnist32-tiny",
        randomar_vq_images=16,
        teacher="mae-teacher-fmnist32-tiny",
        teacher_images=16,
        rasterar_vq="rasterar-vq-fmnist32-tiny",
        rasterar_vq_images=16,
        t2i_sit="t2i-sit-fmnist32-tiny",
        t2i_sit_images=16,
        t2i_sit_sampling=("flow.sampler=euler", "flow.sample_steps=2"),
        t2i_mar="t2i-mar-fmnist32-tiny",
        t2i_mar_images=16,
        t2i_mar_sampling=("num_iter=2", "diffloss.sample_steps=2"),
        text_encoder="text-encoder-fmnist32-tiny",
        text_encoder_images=64,
        t2i_search_num=6,
        t2i_final_num=8,
        tiny_twins=True,
        search_cfgs=(1.0, 2.0),
        ar_search_temperatures=(0.5, 1.0),
        search_num=6,
        final_num=8,
        no_cfg_num=4,
        sample_batch=8,
    ),
}


def suite_cells(suite: str, budget: Budget) -> list[tuple[TokenizerVariant, list[int]]]:
    """The variants of `suite` this budget runs, each with its seeds (offset by `seed_offset`), in the suite's order.

    Raises:
        ValueError: for an unknown suite, a `rows` entry that names no variant of the suite, or a `generators`
            entry that names none of its generators.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    names = [v.name for v in SUITES[suite]]
    unknown = [r for r in budget.rows if r not in names]
    if unknown:
        raise ValueError(
            f"budget rows {unknown} are not variants of the {suite} suite ({', '.join(names)}); "
            "--set 'rows=[]' runs all of them"
        )
    imported = [e.partition("=")[0] for e in budget.tokenizer_dirs]
    if bad := [r for r in imported if r not in names]:
        raise ValueError(f"budget tokenizer_dirs name {bad}, not variants of the {suite} suite ({', '.join(names)})")
    if bad := [v.name for v in SUITES[suite] if v.name in imported and (v.stages or v.finetune_from)]:
        raise ValueError(
            f"budget tokenizer_dirs: rows {bad} train in stages or from another row's tokenizer; an imported "
            "tokenizer replaces a single training run only"
        )
    known = {g for v in SUITES[suite] for g in v.generators}
    if budget.generators is not None and not set(budget.generators) <= known:
        raise ValueError(
            f"budget generators {sorted(set(budget.generators) - known)} are not generators of the {suite} suite "
            f"({', '.join(sorted(known))}); --set generators=null runs all of them"
        )
    cells = []
    for variant in SUITES[suite]:
        if budget.rows and variant.name not in budget.rows:
            continue
        seeds = variant.seeds[: budget.max_seeds] if budget.max_seeds else variant.seeds
        cells.append((variant, [s + budget.seed_offset for s in seeds]))
    return cells


def cell_generators(variant: TokenizerVariant, budget: Budget) -> tuple[str, ...]:
    """The generators of `variant` that `budget` runs (its `generators` selection), in the variant's order."""
    return tuple(g for g in variant.generators if budget.generators is None or g in budget.generators)


def parse_budget(name: str, overrides: list[str]) -> Budget:
    """A named budget with typed `key=value` overrides (e.g. final_num=5000)."""
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}; known: {', '.join(BUDGETS)}")
    return apply_overrides(BUDGETS[name], overrides)
