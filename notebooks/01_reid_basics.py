# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Re-ID basics: the task, the protocol and a strong baseline
#
# **Person re-identification** (re-ID) is retrieval: given a *query* image of a person seen by
# one camera, rank a *gallery* of images from other cameras so that the same person comes
# first. The identities we test on are never seen in training, so the model cannot be a
# classifier over known people: it must map images to an **embedding** where the distance
# between two images says whether they show the same person. That is deep metric learning,
# the thread of this book.
#
# This chapter sets up everything the others stand on:
#
# 1. the data: SynthReID, our rendered re-ID world, read by the same code that reads
#    Market-1501 {cite}`zheng2015market`;
# 2. the protocol: CMC and mAP, worked out by hand on a tiny example;
# 3. why hand-crafted colour features fail across cameras;
# 4. the strong baseline of Luo et al. {cite}`luo2019bag`: a ResNet {cite}`he2016resnet`, a
#    BNNeck, an ID loss with label smoothing and a batch-hard triplet loss;
# 5. its ranked lists, and a results JSON that the [results page](../generated/results) tables.
#
# Where the ideas live in the library:
# - the protocol, CMC and mAP: `reid_core/evaluation/rank.py`;
# - the strong baseline: `reid_core/models/baseline.py` (BNNeck, GeM) and
#   `reid_core/losses/baseline_loss.py` (ID loss with label smoothing + batch-hard triplet,
#   `reid_core/losses/triplet.py`);
# - P x K batches: `reid_core/samplers/random_identity.py`;
# - the colour-histogram baseline: `reid_core/models/color_histogram.py`.
#
# Training, feature extraction and the datasets come from `reid_core.engine` and `reid_core.data`.

# %% tags=["parameters"]
profile = "synth"  # smoke | synth | paper
dataset = "synthreid"  # paper profile: market1501 | dukemtmcreid | cuhk03 | msmt17 | synthreid
data_root = None  # the datasets' folder (None: data/ of the repository); SynthReID goes to data_root/synthreid/
results_dir = None  # results JSON: results_dir/01_reid_basics/<run>.json (None: results/ of the repository)
device = "auto"  # auto | cpu | cuda
seed = 0
overrides = {}  # change profile entries, e.g. {"epochs": 30, "lr": 5e-4}

# %% [markdown]
# Each profile is a recipe. `smoke` only proves the notebook runs. `synth` is what the book
# shows, sized for a 2-core laptop (minutes of training): a ResNet-10 (one residual
# block per stage) trained from scratch at 64x32 pixels for 16 epochs, Adam with learning rate
# 1e-3 after a one-epoch warm-up, x0.1 at epoch 12. From scratch, the paper's 3.5e-4 (meant
# for fine-tuning ImageNet weights) learns too slowly for such a budget. `paper` is the strong baseline's recipe {cite}`luo2019bag`: ResNet-50 pretrained on
# ImageNet with last stride 1, 256x128 input, P=16 identities x K=4 images, Adam with base
# learning rate 3.5e-4, a 10-epoch linear warm-up from 3.5e-5, decay x0.1 at epochs 40 and
# 70, 120 epochs, label smoothing 0.1, triplet margin 0.3, random erasing with p=0.5,
# horizontal flips and 10-pixel padding + random crops.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from reid_core.book import (
    check_injected_parameters,
    checkpoint_dir,
    paper_results_for,
    paper_results_markdown,
    plot_cmc,
    plot_history,
    plot_ranked_lists,
    resolve_device,
    resolve_path,
    select_profile,
    show_images,
    write_result,
)
from reid_core.data import SynthReID, build_dataset, prepare_synthreid
from reid_core.engine import (
    ModelCard,
    TrainConfig,
    Trainer,
    build_test_loader,
    build_train_loader,
    chapter_model_path,
    evaluate_reid,
    metrics_from_cmc,
    save_model,
    seed_everything,
)
from reid_core.evaluation import compute_distance_matrix, evaluate_rank
from reid_core.losses import BaselineLoss
from reid_core.models import BaselineNet, color_histogram_features

check_injected_parameters(globals())  # a misspelt or mistyped papermill parameter stops the run here
data_root = resolve_path(data_root, "data", "data_root")  # None: the repository's data/; relative: to the run's folder
results_dir = resolve_path(results_dir, "results", "results_dir")

PROFILES = {
    "smoke": dict(
        preset="smoke",
        backbone="resnet18",
        pretrained=False,
        height=64,
        width=32,
        epochs=2,
        batch_size=16,
        num_instances=4,
        lr=3.5e-4,
        warmup_epochs=0,
        milestones=(),
        max_iters=3,
    ),
    "synth": dict(
        preset="synth",
        backbone="resnet10",
        pretrained=False,
        height=64,
        width=32,
        epochs=16,
        batch_size=64,
        num_instances=4,
        lr=1e-3,
        warmup_epochs=1,
        milestones=(12,),
        max_iters=None,
    ),
    "paper": dict(
        preset=None,
        backbone="resnet50",
        pretrained=True,
        height=256,
        width=128,
        epochs=120,
        batch_size=64,
        num_instances=4,
        lr=3.5e-4,
        warmup_epochs=10,
        milestones=(40, 70),
        max_iters=None,
    ),
}
cfg = select_profile(PROFILES, profile, overrides)  # unknown names stop the run here
dev = resolve_device(device)
seed_everything(seed)
print(f"profile={profile} device={dev}")

# %% [markdown]
# ## 1. The data
#
# A re-ID dataset has three parts: **train** (identities to learn from, relabelled
# 0..C-1), **query** and **gallery** (other identities; the gallery also holds
# *distractors*, pid 0, that match no query, and *junk* boxes, pid -1, that the protocol
# ignores). Every image comes with its camera.
#
# In the `smoke` and `synth` profiles the data is **SynthReID**, rendered on the fly
# (deterministic: same seed, same bytes): procedural pedestrians with clothes, bags, hair and
# shoes, seen by six cameras that differ in colour cast, brightness, blur, resolution and
# viewpoint, with detector-style misaligned crops, occluders, and families of look-alike
# identities. It is written in Market-1501's layout and file names, so the reader below is
# the Market-1501 reader. In the `paper` profile, `dataset` names a real dataset under
# `data_root` (see [Datasets and the evaluation protocol](../datasets)).

# %%
if profile == "paper":
    data = build_dataset(dataset, data_root, verbose=False)
    dataset_name = dataset
else:
    root = prepare_synthreid(data_root, cfg["preset"])
    data = SynthReID(root, verbose=False)
    dataset_name = f"synthreid/{cfg['preset']}"

# %%
# NBVAL_CHECK_OUTPUT
data.print_statistics()

# %% [markdown]
# One identity as the six cameras see it, and the identities of one look-alike family
# (they share everything but one or two attributes: here is what makes re-ID hard).

# %%
by_pid: dict[int, list[tuple[str, int]]] = {}
for path, pid, camid in data.query + data.gallery:
    by_pid.setdefault(pid, []).append((path, camid))
# the test identity seen by the most cameras, one image per camera
pid0 = max(sorted(p for p in by_pid if p > 0), key=lambda p: len({c for _, c in by_pid[p]}))
one_per_cam = {c: path for path, c in sorted(by_pid[pid0], key=lambda t: (t[1], t[0]))}
views = sorted(one_per_cam.items())[:8]
fig = show_images([p for _, p in views], [f"pid {pid0} cam {c + 1}" for c, _ in views])
plt.show()

# %%
if profile != "paper":
    import json

    meta = json.loads((root / "synthreid.json").read_text())
    identities = meta["identities"]
    family_of = (
        {int(k): v["family"] for k, v in identities.items()}
        if isinstance(identities, dict)
        else {int(v["pid"]): v["family"] for v in identities}
    )
    test_pids = sorted(p for p in by_pid if p > 0)
    fam = family_of[test_pids[0]]
    members = [p for p in test_pids if family_of.get(p) == fam][:6]
    paths = [sorted(by_pid[p], key=lambda t: t[1])[0][0] for p in members]
    show_images(paths, [f"pid {p}" for p in members], ncols=max(len(paths), 2))
    plt.suptitle(f"a look-alike family (family {fam})", y=1.02)
    plt.show()

# %% [markdown]
# ## 2. The protocol: CMC and mAP, by hand
#
# For a query $q$, sort the gallery by distance after dropping the gallery images of the
# **same identity seen by the same camera** (and junk). Let $r_{q,1} < r_{q,2} < \dots$ be the
# positions of the true matches in that filtered list.
#
# * **CMC at rank $k$**: the fraction of queries whose first match is within the top $k$,
#   $\mathrm{CMC}(k) = \frac1{|Q|}\sum_q \mathbb 1[r_{q,1} \le k]$.
# * **Average precision**: $\mathrm{AP}(q) = \frac1{n_q}\sum_{j=1}^{n_q} \frac{j}{r_{q,j}}$ (the
#   precision at each true match), and **mAP** is its mean over queries.
#
# A tiny example: two queries, six gallery images.
#
# | gallery | g0 | g1 | g2 | g3 | g4 | g5 |
# | --- | --- | --- | --- | --- | --- | --- |
# | pid | 1 | 2 | 1 | 0 (distractor) | 1 | 3 |
# | camera | 0 | 1 | 1 | 2 | 2 | 1 |
# | distance to q1 (pid 1, cam 0) | 0.1 | 0.3 | 0.5 | 0.2 | 0.9 | 0.4 |
# | distance to q2 (pid 2, cam 0) | 0.6 | 0.2 | 0.1 | 0.3 | 0.5 | 0.7 |
#
# *q1*: g0 shows pid 1 from camera 0, the query's own camera: it is dropped, even though it is
# the closest. The filtered order is g3, g1, g5, **g2**, **g4**: matches at positions 4 and 5,
# so $r_{q1,1} = 4$ and $\mathrm{AP} = \frac12(\frac14 + \frac25) = 0.325$.
# *q2*: the order is g2, **g1**, ...: one match at position 2, $\mathrm{AP} = \frac12$.
# Hence $\mathrm{CMC} = (0, 0.5, 0.5, 1, 1, \dots)$ and $\mathrm{mAP} = (0.325 + 0.5)/2 = 0.4125$.
# `evaluate_rank` must agree:

# %%
# NBVAL_CHECK_OUTPUT
toy_dist = np.array([[0.1, 0.3, 0.5, 0.2, 0.9, 0.4], [0.6, 0.2, 0.1, 0.3, 0.5, 0.7]])
toy_cmc, toy_map = evaluate_rank(
    toy_dist,
    q_pids=np.array([1, 2]),
    g_pids=np.array([1, 2, 1, 0, 1, 3]),
    q_camids=np.array([0, 0]),
    g_camids=np.array([0, 1, 1, 2, 2, 1]),
    max_rank=5,
)
print("CMC:", np.round(toy_cmc, 4).tolist())
print("mAP:", round(float(toy_map), 4))
assert np.allclose(toy_cmc, [0, 0.5, 0.5, 1, 1]) and abs(toy_map - 0.4125) < 1e-9

# %% [markdown]
# ## 3. A hand-crafted matcher: colour histograms
#
# Before deep learning, re-ID compared colour and texture histograms of horizontal stripes
# of the body. A histogram is invariant to small shifts and to the pose, but not to the camera:
# a colour cast or a change of brightness moves every bin. SynthReID's cameras differ exactly
# that way, so this matcher should do poorly across cameras, which is what a learned embedding
# has to overcome.

# %%
q_paths = [p for p, _, _ in data.query]
g_paths = [p for p, _, _ in data.gallery]
q_pids = np.array([pid for _, pid, _ in data.query])
q_cams = np.array([c for _, _, c in data.query])
g_pids = np.array([pid for _, pid, _ in data.gallery])
g_cams = np.array([c for _, _, c in data.gallery])
hq = torch.as_tensor(color_histogram_features(q_paths))
hg = torch.as_tensor(color_histogram_features(g_paths))
hist_dist = compute_distance_matrix(hq, hg, metric="euclidean")
hist_cmc, hist_map = evaluate_rank(hist_dist, q_pids, g_pids, q_cams, g_cams)
hist_metrics = metrics_from_cmc(hist_cmc, hist_map)
print("colour histogram: R1 {rank1:.1f}  R5 {rank5:.1f}  mAP {mAP:.1f}".format(**hist_metrics))
_ = write_result(
    results_dir,
    "01_reid_basics",
    "color_histogram",
    method="colour histogram (hand-crafted)",
    dataset=dataset_name,
    profile=profile,
    train_seconds=0.0,
    device="cpu",
    params={"features": "color_histogram_features defaults"},
    **hist_metrics,
)  # `_ =`: the returned path stays off the page

# %% [markdown]
# ## 4. The strong baseline
#
# Luo et al. {cite}`luo2019bag` collected the training tricks that many re-ID papers used
# without saying so, and showed that a plain ResNet-50 with them reaches 94.1% rank-1 and 85.7%
# mAP on Market-1501 (94.5 / 85.9 once a center loss is added, which this chapter leaves out;
# the paper also tests on the normalised BNNeck feature, without flipping). The model:
#
# $$ f_t = \mathrm{GAP}(F), \qquad f_i = \mathrm{BN}(f_t), \qquad z = W f_i, $$
#
# where $F$ is the last feature map of a ResNet whose last stage keeps stride 1 (a 256x128
# image gives a 16x8 map instead of 8x4). Two losses pull on two features:
#
# * the **ID loss** on the logits $z$: cross-entropy against a *label-smoothed* target
#   $q_i = (1-\epsilon)\,\mathbb 1[i = y] + \epsilon / C$ with $\epsilon = 0.1$
#   {cite}`szegedy2016inception`, so the network is not pushed to infinite confidence on the
#   training identities;
# * the **batch-hard triplet loss** {cite}`hermans2017defense` on $f_t$: in a batch of $P$
#   identities with $K$ images each, every anchor $a$ is pulled towards its farthest positive
#   and pushed from its closest negative,
#   $L_{BH} = \frac1{PK}\sum_a \big[m + \max_p D_{ap} - \min_n D_{an}\big]_+$, $m = 0.3$.
#
# The **BNNeck** (the BN between $f_t$ and $f_i$, with its shift frozen at 0) separates the
# two: the triplet loss shapes a euclidean space, the classifier an angular one. At test time
# the feature is $f_i$. Batches come from the **PK sampler**: $P$ random identities, $K$
# random images each (an identity with fewer than $K$ images is sampled with replacement), so
# every batch holds positives and negatives for the triplet loss.

# %%
train_loader = build_train_loader(
    data.train,
    cfg["height"],
    cfg["width"],
    batch_size=cfg["batch_size"],
    num_instances=cfg["num_instances"],
    preload=profile != "paper",
    seed=seed,
)
query_loader = build_test_loader(data.query, cfg["height"], cfg["width"], preload=profile != "paper")
gallery_loader = build_test_loader(data.gallery, cfg["height"], cfg["width"], preload=profile != "paper")
model = BaselineNet(data.num_train_pids, backbone=cfg["backbone"], pretrained=cfg["pretrained"], last_stride=1)
criterion = BaselineLoss(id_weight=1.0, triplet_weight=1.0, margin=0.3, label_smoothing=0.1)
train_cfg = TrainConfig(
    epochs=cfg["epochs"],
    optimizer="adam",
    lr=cfg["lr"],
    weight_decay=5e-4,
    scheduler="step",
    milestones=cfg["milestones"],
    gamma=0.1,
    warmup_epochs=cfg["warmup_epochs"],
    warmup_factor=0.1,
    max_iters_per_epoch=cfg["max_iters"],
    seed=seed,
    checkpoint_dir=checkpoint_dir(results_dir, "01_reid_basics", dataset, profile),
)
print(
    f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
    f"{data.num_train_pids} training identities, {len(train_loader)} iterations per epoch"
)

# %%
start = time.perf_counter()
history = Trainer(model, criterion, train_loader, train_cfg, device=dev).fit()
train_seconds = time.perf_counter() - start
print(f"trained in {train_seconds:.0f} s")
plot_history({"baseline": history}, keys=("id", "triplet", "lr"))
plt.show()

# %% [markdown]
# ## 5. Evaluation
#
# Features are extracted in eval mode and averaged with those of the mirrored image; the
# distance is euclidean between the BNNeck features $f_i$.

# %%
result = evaluate_reid(model, query_loader, gallery_loader, metric="euclidean", flip=True, device=dev)
print("strong baseline:", result)
write_result(
    results_dir,
    "01_reid_basics",
    "baseline",
    method=f"strong baseline ({cfg['backbone']})",
    dataset=dataset_name,
    profile=profile,
    train_seconds=train_seconds,
    device=str(dev),
    params={k: v for k, v in cfg.items() if k != "preset"},
    **result.metrics,
)
card = ModelCard(
    "baseline",
    data.num_train_pids,
    {"backbone": cfg["backbone"], "last_stride": 1},
    cfg["height"],
    cfg["width"],
    embedding="BNNeck output f_i",
    training={"dataset": dataset_name, "recipe": cfg},
    results=result.metrics,
)  # the model file for `reid` and chapter 06:
save_model(model, card, chapter_model_path(results_dir, "01_reid_basics", profile, dataset))
plot_cmc({"colour histogram": hist_cmc, "strong baseline": result.cmc})
plt.show()

# %% [markdown]
# **Ranked lists.** Each row is a query followed by its top-10 gallery images under the
# Market-1501 rule; a green border marks the same identity, a red one another identity. The
# mistakes are instructive: look-alike identities from the same family and images under a
# strong colour cast come first.

# %%
qs = np.linspace(0, len(data.query) - 1, num=min(4, len(data.query))).astype(int)
plot_ranked_lists(q_paths, g_paths, result.distmat.numpy(), q_pids, g_pids, q_cams, g_cams, qs, topk=10)
plt.show()

# %% [markdown]
# ## 6. Beside the paper
#
# On SynthReID the absolute numbers mean little; what matters is the gap between a learned
# embedding and the hand-crafted one, and that the same code, with the `paper` profile, runs
# the recipe on Market-1501.

# %%
rows = [
    f"| ours: colour histogram | {dataset_name} | {hist_metrics['rank1']:.1f} | {hist_metrics['mAP']:.1f} |",
    f"| ours: strong baseline ({cfg['backbone']}, {profile}) | {dataset_name} | {result.metrics['rank1']:.1f} | {result.metrics['mAP']:.1f} |",
]
display(Markdown("| method | test set | R1 | mAP |\n| --- | --- | --- | --- |\n" + "\n".join(rows)))
display(Markdown(paper_results_markdown(paper_results_for("basics"))))

# %% [markdown]
# ## What to try next
#
# * Switch off a cause of difficulty in SynthReID (`camera_shift=0`, `occlusion_prob=0`) and
#   see which method gains most: the histogram gains from neutral cameras, the CNN much less.
# * Remove one trick at a time (the BNNeck, label smoothing, last stride 1) to see its share.
# * Re-rank the gallery with k-reciprocal neighbours (chapter on AlignedReID).
