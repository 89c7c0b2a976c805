"""The papers' claims, one entry each: the sentence quoted verbatim from ../shared/papers, where it is,
the statistic of this run's tables that tests it, and the gates that can block a verdict.

Adding a claim is one `Claim(...)` in `CLAIMS` (tests check every quote against the paper's text and
every id once). Readings chosen where the paper is ambiguous are in each entry's `note`.
Papers: 000 = Dremov et al., cooldown stage of WSD (TMLR 2025); 001 = Belloni, Orvieto, Noci,
universal dynamics of WSD; 002 = pre-training without LR decay (WSO) enhances SFT.
"""

from __future__ import annotations

from wsdlab.analysis.claims import extract as X
from wsdlab.analysis.claims.model import Claim, Correlation, Difference, Ordering, PerUnit, Reported

PAPERS = {
    "000": "Dremov et al. (TMLR 2025): training dynamics of the cooldown stage in WSD",
    "001": "Belloni, Orvieto, Noci: universal dynamics of WSD beyond transformers",
    "002": "Pre-training without learning-rate decay enhances supervised fine-tuning (WSO)",
}
# The paper's scale, as printed (000 §3.1 and §4.1; 001 App. A; 002 Tables 6-7 and App. G).
PAPER_SCALE = {
    "000": "210M params, 3.4B tokens per cooldown run (references 6B), N = 9 data orders",
    "001": "LM 160M params, ~3B tokens; CNN 334K params, ~50 epochs of CIFAR-10; 'multiple' runs",
    "002": "1B (350B tokens) and 8B (500B tokens) params; one run per configuration",
}
# A study touches a paper when it has one of these tables: only then are the paper's claims listed.
PAPER_TABLES = {
    "000": ("bias_variance", "perplexity", "averaging", "recency", "hyperparams"),
    "001": ("universality_curves", "universality_interpolate", "universality_sharpness", "universality_trajectory",
            "universality_norms", "universality_length"),
    "002": ("wso_models", "wso_delta", "wso_sharpness", "wso_correlation"),
}

# quotes that back two claims each (one sentence of the paper, two tested statistics)
_LOWERED_LINEAR = (
    "**On the left**, we compare only lowered linear shapes (Figure 5), which exhibit an expected decrease "
    "in variance and increase in bias with decreasing parameter value."
)
_WEIGHT_SPACE = (
    "Surprisingly, the same structure is observed when results are plotted in model weights space."
)
_RECENCY = (
    "**On the right**, the shift-deviation plot for different cooldown shapes. It is clear that the pattern "
    "is similar to the one we observed before in Figure 7."
)
_RIVER_VALLEY = (
    "Both models display a similar convex valley-shaped profile between the two checkpoints sampled "
    "near the end of the stable phase, followed by a monotonic descent over the cooldown period."
)
_QUASI_CONVEXITY = (
    "As shown in Fig. 4, Weak-Quasi-Convexity holds for both models, in nearly all cases. Similarly, we "
    "compare AdamW updates to those of SGD. To do so, we compute the cosine similarity between the "
    "negative gradient and the actual update vector at each point in B, consistently finding positive "
    "values for both models (Fig. 4)."
)
_CNN_LENGTH = (
    "For example, under our settings, the learning rate must decay for at least 35% of the total training "
    "steps for the WSD performance to match that of Warmup Cosine Annealing."
)
_FEW = "{n} points: a correlation's interval needs at least 4"
_NO_SE = "bias_variance.csv has no jackknife standard errors (bias_se, variance_se): no interval"
BATCH_MATCHED_MARGIN = 0.02  # nats of validation loss (2% perplexity): "minor" in §6.1's reading, see the note

_000 = [
    Claim(
        id="000-best-shapes", paper="000", where="Fig. 8 (left); §4.3", figure="perplexity",
        claim="sqrt and lowered linear (p = 0.7) reach the lowest mean perplexity of the cooldown shapes",
        quote="We observe that *lowered linear 0.7* and *sqrt* achieve similar performance, which aligns with the "
              "findings from the bias-variance plot in Figure 7.",
        check=Ordering(X.final_perplexity, ("sqrt", "lowered_linear-0.7"), "final val perplexity"),
        tables=("val_curves",), units=("val_curves",),
        note="The paper says the two 'achieve similar performance' and give 'an optimal trade-off' (§4.3, §9), "
             "printing no perplexities; read as: each of the two beats every other shape (paired over seeds).",
    ),
    Claim(
        id="000-ll-bias", paper="000", where="Fig. 7 (left)", figure="bias_variance",
        claim="lowered linear with a smaller p has a higher bias (KL space)",
        quote=_LOWERED_LINEAR,
        check=Reported(X.lowered_linear_step("kl", "bias"), ">", "KL bias: lowered_linear smallest p - largest p",
                       no_interval=_NO_SE),
        tables=("bias_variance",), units=("bias_variance",), gates=(X.reference_gate,),
        note="Interval from the table's jackknife standard errors (leave one seed out) when present.",
    ),
    Claim(
        id="000-ll-variance", paper="000", where="Fig. 7 (left)", figure="bias_variance",
        claim="lowered linear with a smaller p has a lower variance (KL space)",
        quote=_LOWERED_LINEAR,
        check=Reported(X.lowered_linear_step("kl", "variance"), "<", "KL variance: lowered_linear smallest p - largest p",
                       no_interval=_NO_SE),
        tables=("bias_variance",), units=("bias_variance",),
    ),
    Claim(
        id="000-tradeoff", paper="000", where="§4.3, Fig. 7 (right)", figure="bias_variance",
        claim="bias and variance trade off across cooldown shapes (negative correlation, KL space)",
        quote="We conclude that different cooldown shapes regulate a trade-off between bias and variance during "
              "cooldown, which significantly impacts performance.",
        check=Correlation(X.bias_variance_points("kl", "bias", "variance"), "<", "KL bias vs variance across shapes"),
        tables=("bias_variance",), units=("bias_variance",), gates=(X.reference_gate,),
        note="A trade-off read as a negative correlation of bias and variance across shapes.",
    ),
    Claim(
        id="000-avg-ppl-bias", paper="000", where="Fig. 8 (right); §4.1", figure="perplexity_vs_bias",
        claim="the perplexity of each shape's averaged model correlates positively with its bias (KL space)",
        quote="**On the right**, we compare the validation perplexity of mean models for each shape with the bias "
              "from the bias-variance plot in Figure 7. This demonstrates a high correlation between validation "
              "perplexity and bias, proving that the proposed bias is a good proxy for evaluating average model "
              "performance.",
        check=Reported(X.fisher_of(X.reported_correlation("perplexity_vs_bias", {"space": "kl"})), ">",
                       "Pearson r of KL bias vs averaged-model perplexity across shapes (Fisher z)", no_interval=_FEW),
        tables=("perplexity_vs_bias",), units=("perplexity",), gates=(X.reference_gate,),
    ),
    Claim(
        id="000-weight-space-bias", paper="000", where="App. C.1 (Figs. 14, 15)", figure="bias_variance",
        claim="weight-space bias orders the shapes like KL-space bias",
        quote=_WEIGHT_SPACE,
        check=Correlation(X.across_spaces("kl", "weight", "bias"), ">", "KL bias vs weight-space bias across shapes",
                          method="spearman"),
        tables=("bias_variance",), units=("bias_variance",), gates=(X.reference_gate,),
        note="'The same structure' read as a positive rank correlation across shapes (the paper notes minor variations).",
    ),
    Claim(
        id="000-weight-space-variance", paper="000", where="App. C.1 (Figs. 14, 15)", figure="bias_variance",
        claim="weight-space variance orders the shapes like KL-space variance",
        quote=_WEIGHT_SPACE,
        check=Correlation(X.across_spaces("kl", "weight", "variance"), ">",
                          "KL variance vs weight-space variance across shapes", method="spearman"),
        tables=("bias_variance",), units=("bias_variance",),
    ),
    Claim(
        id="000-recency-shift", paper="000", where="Fig. 9 (right); App. E (Fig. 23)", figure="recency_vs_bias_variance",
        claim="the recency shift follows the bias across shapes (positive Spearman correlation)",
        quote=_RECENCY,
        check=Reported(X.fisher_of(X.reported_correlation("recency_correlations", {"x": "shift", "y": "bias", "space": "kl"},
                                                           "spearman"), spearman=True), ">",
                       "Spearman r of recency shift vs KL bias across shapes (Fisher z)", no_interval=_FEW),
        tables=("recency_correlations",), units=("recency",), setting=X.recency_stride_note, gates=(X.reference_gate,),
    ),
    Claim(
        id="000-recency-deviation", paper="000", where="Fig. 9 (right); App. E (Fig. 23)", figure="recency_vs_bias_variance",
        claim="the recency deviation follows the variance across shapes (positive Spearman correlation)",
        quote=_RECENCY,
        check=Reported(X.fisher_of(X.reported_correlation("recency_correlations",
                                                           {"x": "deviation", "y": "variance", "space": "kl"},
                                                           "spearman"), spearman=True), ">",
                       "Spearman r of recency deviation vs KL variance across shapes (Fisher z)", no_interval=_FEW),
        tables=("recency_correlations",), units=("recency",), setting=X.recency_stride_note,
    ),
    Claim(
        id="000-avg-worse", paper="000", where="§5, Fig. 10", figure="averaging",
        claim="every shape's weight average is worse than one longer run on the same data",
        quote="While all averages perform worse than a simple longer run, it is evident that high-variance low-bias "
              "shapes provide the best performance.",
        check=Ordering(X.averaging_samples, ("longer run",), "val loss", spread=X.seed_spread),
        tables=("averaging",), units=("averaging",),
        note="One average per shape and one longer run: intervals use the cooldown grid's measured seed spread.",
    ),
    Claim(
        id="000-avg-high-variance", paper="000", where="§5, Fig. 10; §9", figure="averaging",
        claim="high-variance shapes average best (variance correlates negatively with the averaged model's loss)",
        quote="Therefore, in the setting of model averaging, high-variance low-bias shapes like *mirror cosine* "
              "perform better than trade-off shapes like *sqrt*.",
        check=Correlation(X.variance_vs_average, "<", "KL variance vs averaged-model val loss across shapes",
                          method="spearman"),
        tables=("averaging", "bias_variance"), units=("averaging", "bias_variance"),
    ),
    Claim(
        id="000-batch-matched", paper="000", where="§6.1, Fig. 11a (left)", figure="hyperparams",
        claim="a 2x batch with the AdamW half-life matched changes the cooldown's result little",
        quote="We observe in Figure 11a that increasing the batch size leads to a deterioration in quality. "
              "However, examining the absolute values reveals that this variation is minor.",
        check=Difference(X.panel_samples("batch_x_half_life"), "batch_x_half_life=2", "batch_x_half_life=1", "~",
                         "val loss", margin=BATCH_MATCHED_MARGIN, spread=X.seed_spread),
        tables=("hyperparams",), units=("hyperparams",),
        note=f"'Minor' read as a difference within +-{BATCH_MATCHED_MARGIN} nats (2% perplexity) of the baseline.",
    ),
    Claim(
        id="000-batch-unmatched", paper="000", where="§6.1, Fig. 11b (right)", figure="hyperparams",
        claim="a 2x batch without matching the half-life improves the cooldown",
        quote="Interestingly, significant performance improvements are observed when no adjustments are made to "
              "$\\beta_1$ and $\\beta_2$ (Figure 11b).",
        check=Difference(X.panel_samples("batch_x"), "batch_x=2", "batch_x=1", "<", "val loss", spread=X.seed_spread),
        tables=("hyperparams",), units=("hyperparams",),
    ),
    Claim(
        id="000-beta2", paper="000", where="Abstract; §6.2, Fig. 12 (right)", figure="hyperparams",
        claim="a larger beta2 in the cooldown (beta2 -> beta2^0.5) improves it",
        quote="Notably, we observe consistent improvements with higher values of $\\beta_2$ during cooldown.",
        check=Difference(X.panel_samples("beta2_p"), "beta2_p=0.5", "beta2_p=1", "<", "val loss", spread=X.seed_spread),
        tables=("hyperparams",), units=("hyperparams",),
    ),
]


def _001(model: str) -> list[Claim]:
    name = {"lm": "LM", "cnn": "CNN"}[model]
    return [
        Claim(
            id=f"001-cooldown-gain-{model}", paper="001", where="Fig. 1", figure="univ_curves",
            claim=f"{name}: the cooldown gains more loss per step than the stable phase before it",
            quote="In both the 160M parameters LM with Pythia 12 layer configuration (Biderman et al., 2023) (left) "
                  "and the 334K parameters CNN with 4 layers (right), we observe that WSD follows the same trend: "
                  "modest decreases during the stable phase (left of dashed line), followed by sudden and larger "
                  "gains during the cooldown (right of dashed line).",
            check=PerUnit(X.cooldown_gain(model), ">", "train-loss drop per step: cooldown - equally long stable window"),
            tables=("universality_curves",), units=("universality_curves",),
            note="'Larger gains' read as rates over equal windows: the least-squares slope of the per-step training "
                 "loss over the cooldown vs over the stable window of the same length just before it.",
        ),
        Claim(
            id=f"001-river-valley-{model}", paper="001", where="Fig. 2", figure="univ_interpolation",
            claim=f"{name}: the line from 80% to 100% of the stable phase dips below both ends (river valley)",
            quote=_RIVER_VALLEY,
            check=PerUnit(X.interpolation(model, "stable", X.valley_depth), ">",
                          "min(loss at the ends) - min(loss inside)"),
            tables=("universality_interpolate",), units=("universality_interpolate",),
            note="'Convex valley-shaped profile' read as an interior minimum below both end points.",
        ),
        Claim(
            id=f"001-monotone-cooldown-{model}", paper="001", where="Fig. 2", figure="univ_interpolation",
            claim=f"{name}: the loss descends monotonically along the line across the cooldown",
            quote=_RIVER_VALLEY,
            check=PerUnit(X.interpolation(model, "cooldown", X.largest_rise), "<",
                          "largest loss increase between consecutive alphas"),
            tables=("universality_interpolate",), units=("universality_interpolate",),
        ),
        Claim(
            id=f"001-sharpness-rises-{model}", paper="001", where="Fig. 3 (left)", figure="univ_sharpness",
            claim=f"{name}: the top Hessian eigenvalue rises along the cooldown",
            quote="Further examining the shape of the loss function, we observe that, for both models, sharpness (the "
                  "largest eigenvalue of the loss Hessian) tends to increase along the iterates collected while "
                  "annealing the learning rate (which we name D) (Fig. 3),",
            check=PerUnit(X.sharpness_rise(model), ">", "lambda_1 at the cooldown's end - at its start"),
            tables=("universality_sharpness",), units=("universality_sharpness",),
            gates=(X.lanczos_gate("universality_sharpness", model),),
        ),
        Claim(
            id=f"001-pc1-{model}", paper="001", where="Fig. 7 (App. B)", figure="univ_pc1_share",
            claim=f"{name}: PC1 explains about 40% or more of each phase's iterates", paper_value="at least ~40%",
            quote="For both models and phases, the first component captures at least approximately 40% of the total "
                  "variance (Fig. 7), suggesting that each phase is primarily governed by a main yet distinct "
                  "direction.",
            check=PerUnit(X.pca_share(model), ">", "PC1 share of the S and D iterates", threshold=0.35),
            tables=("universality_trajectory",), units=("universality_trajectory",),
            gates=(X.pca_iterates_gate(model),),
            note="'At least approximately 40%' read as a mean share above 0.35; runs x phases (S, D) are the units.",
        ),
        Claim(
            id=f"001-hv-{model}", paper="001", where="Fig. 3 (right)", figure="univ_hv_norm",
            claim=f"{name}: ||H v_d|| > ||H v_s|| (the decay direction is sharper)",
            quote="We then analyze how these directions align with the Hessian $\\nabla^2 \\mathcal{L}(\\hat{x})$ "
                  "eigenspaces, finding $\\|\\nabla^2 \\mathcal{L}(\\hat{x})v_s\\| < \\|\\nabla^2 "
                  "\\mathcal{L}(\\hat{x})v_d\\|$ for both models (Fig. 3).",
            check=PerUnit(X.hv_ratio(model), ">", "log(||H v_d|| / ||H v_s||)"),
            tables=("universality_trajectory",), units=("universality_trajectory",),
        ),
        Claim(
            id=f"001-tau-{model}", paper="001", where="Fig. 4", figure="univ_quasi_convexity",
            claim=f"{name}: weak quasi-convexity, tau > 0 along the path",
            quote=_QUASI_CONVEXITY,
            check=PerUnit(X.path_mean(model, "tau"), ">", "mean tau over the sampled iterates"),
            tables=("universality_trajectory",), units=("universality_trajectory",),
        ),
        Claim(
            id=f"001-cos-{model}", paper="001", where="Fig. 4", figure="univ_quasi_convexity",
            claim=f"{name}: cos(-grad, update) > 0 along the path",
            quote=_QUASI_CONVEXITY,
            check=PerUnit(X.path_mean(model, "cos_grad_update"), ">", "mean cos(-grad, update) over the sampled iterates"),
            tables=("universality_trajectory",), units=("universality_trajectory",),
        ),
        Claim(
            id=f"001-update-norm-{model}", paper="001", where="Fig. 6 (App. B)", figure="univ_norms",
            claim=f"{name}: updates are larger in the stable phase than in the cooldown",
            quote="In both, weight updates are much larger in the stable phase (left of dashed line) than in the "
                  "cooldown phase (right of dashed line).",
            check=PerUnit(X.update_norm_gap(model), ">", "mean update norm: stable - cooldown"),
            tables=("universality_norms",), units=("universality_norms",),
        ),
    ]


LENGTH_MATCH_MARGIN = 0.01  # nats: "match" = WSD's final val loss at most this much above cosine's

_001 = _001("lm") + _001("cnn") + [
    Claim(
        id="001-length-cnn-short", paper="001", where="Fig. 5 (App. B)", figure="univ_length",
        claim="CNN: a cooldown shorter than 35% of the steps does not match warmup-cosine", paper_value="35%",
        quote=_CNN_LENGTH,
        check=Difference(X.length_samples("cnn"), X.shortest_fraction(below=0.35), "cosine", ">", "final val loss",
                         threshold=LENGTH_MATCH_MARGIN),
        tables=("universality_length",), units=("universality_length",),
        note=f"The longest swept fraction below 35%; 'not matching' = WSD more than {LENGTH_MATCH_MARGIN} nats worse.",
    ),
    Claim(
        id="001-length-cnn-35", paper="001", where="Fig. 5 (App. B)", figure="univ_length",
        claim="CNN: a cooldown of 35% (or the next longer swept) matches warmup-cosine", paper_value="35%",
        quote=_CNN_LENGTH,
        check=Difference(X.length_samples("cnn"), X.shortest_fraction(at_least=0.35), "cosine", "<",
                         "final val loss", threshold=LENGTH_MATCH_MARGIN),
        tables=("universality_length",), units=("universality_length",),
        note=f"'Match' = WSD at most {LENGTH_MATCH_MARGIN} nats worse than cosine (paired over seeds).",
    ),
    Claim(
        id="001-length-lm-20", paper="001", where="App. A", figure="univ_length",
        claim="LM: a 20% cooldown already matches warmup-cosine", paper_value="20% (LM)",
        quote="Finally, we mention that in our experiments on LM, we follow Schaipp et al. (2025) and use a cooldown "
              "length of 20% of the total steps. On CNN instead, a longer decay (35%) is needed to better match "
              "warmup cosine annealing performance.",
        check=Difference(X.final_by_schedule("lm"), "wsd", "cosine", "<", "final val loss",
                         threshold=LENGTH_MATCH_MARGIN),
        tables=("universality_curves",), units=("universality_curves",),
        note="The paper sweeps the CNN only; the LM's 20% is its setting, read as matching cosine: the LM's WSD "
             "runs (20% cooldown) against its cosine runs, paired over seeds.",
    ),
]

_SFT_NOTE = ("Units are SFT data-order seeds, paired; the best decay-based model is chosen on the same scores "
             "(as the paper's reference row); a difference within the task's item-sampling noise (binomial, "
             "wso_models.task_n items) is inconclusive whatever the seeds say.")

_002 = [
    Claim(
        id="002-pretrain-decay-best", paper="002", where="§3.2, Table 1", figure="wso_delta",
        claim="after pre-training, a decay-based schedule has a lower validation loss than WSO",
        paper_value="PT valid loss, WSO - best decay: +0.071 (1B), +0.127 (8B)",
        quote="For pre-training performance, decay-based schedulers achieve the best performance with "
              "αpre=0\\alpha_{\\text{pre}}=0. Specifically, Linear and WSD with αpre=0\\alpha_{\\text{pre}}=0 "
              "achieve the best PT Task Avg scores for the 1B and 8B models, respectively.",
        check=Difference(X.wso_vs_best_decay("pretrain", "pt_val_loss", higher_better=False), "WSO",
                         X.group_named("best decay"), ">",
                         "pre-training val loss"),
        tables=("wso_delta",), units=("wso_delta",),
        note="The best decay-based model is chosen on the same numbers (as Table 1 does).",
    ),
    Claim(
        id="002-sft-wso-best", paper="002", where="§3.2, Table 1", figure="wso_delta",
        claim="after SFT, WSO scores higher downstream than the best decay-based schedule",
        paper_value="SFT task avg, WSO - best decay: +0.3 (1B), +1.1 (8B)",
        quote="In contrast, after SFT, WSO achieves the best performance for both model sizes, even though it "
              "underperforms decay-based schedulers in pre-training metrics.",
        check=Difference(X.wso_sft_vs_best_decay("pretrain"), "WSO",
                         X.group_named("best decay"), ">",
                         "SFT task acc_norm at the selected LR"),
        tables=("wso_sft_sweep",), units=("wso_eval",), gates=(X.task_noise_gate(X.wso_sft_vs_best_decay("pretrain")),),
        note=_SFT_NOTE,
    ),
    Claim(
        id="002-mid-sft-wso-best", paper="002", where="§4.2, Table 2", figure="wso_delta",
        claim="after mid-training and SFT, WSO scores higher downstream than the best decay-based schedule",
        paper_value="SFT task avg, WSO - best decay: +0.8 (1B), +1.1 (8B)",
        quote="WSO achieves the best downstream task performance after SFT, even though it underperforms the best "
              "decay-based schedulers in mid-training metrics.",
        check=Difference(X.wso_sft_vs_best_decay("mid"), "WSO",
                         X.group_named("best decay"), ">",
                         "SFT task acc_norm at the selected LR"),
        tables=("wso_sft_sweep",), units=("wso_eval",), gates=(X.task_noise_gate(X.wso_sft_vs_best_decay("mid")),),
        note="WSO = alpha_pre = 1 and alpha_mid = 1; alpha_pre = 1 with alpha_mid = 0 decays in mid-training "
             "and counts as decay-based (the paper's 'WSD' row of Table 2). " + _SFT_NOTE,
    ),
    Claim(
        id="002-trace", paper="002", where="§6, Fig. 3", figure="wso_sharpness",
        claim="a fully decayed model (alpha_pre = 0) ends with a larger Hessian trace than WSO",
        paper_value="about 2-3x",
        quote="Across both datasets, models with decaying LRs converge to regions with about 2–3×\\times higher "
              "sharpness compared to WSO models.",
        check=Reported(X.trace_gap("pt"), ">", "final Hessian trace (PT data): least sharp alpha_pre = 0 model - WSO"),
        tables=("wso_sharpness",), units=("wso_sharpness",), gates=(X.hutchinson_gate("pt"),),
        note="Interval from the two Hutchinson standard errors (probe noise; one pre-training run per model, as "
             "the paper); the least sharp decayed model is compared.",
    ),
    Claim(
        id="002-sharpness-sft-corr", paper="002", where="§6, Fig. 4", figure="wso_sharpness_sft",
        claim="pre-training sharpness correlates negatively with the SFT score", paper_value="Pearson r = -0.709",
        quote="The analysis reveals a negative correlation (Pearson r=0.709r=-0.709) between the sharpness of the "
              "minima and the model’s performance after SFT.",
        check=Reported(X.fisher_of(X.reported_correlation("wso_correlation", {"dataset": "pt", "score": "sft_task"}, "r")),
                       "<", "Pearson r of the final PT-data trace vs SFT task accuracy (Fisher z)", no_interval=_FEW),
        tables=("wso_correlation",), units=("wso_correlation",), gates=(X.hutchinson_gate("pt"),),
    ),
]

CLAIMS: tuple[Claim, ...] = (*_000, *_001, *_002)
