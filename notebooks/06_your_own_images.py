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
# # Your own images: the `reid` command
#
# The question asked most often about re-ID code is not about a loss. It is: *how do I run a
# trained model on my own crops, and when are two crops the same person?* This page answers it
# with the `reid` command that comes with `reid_core`, on the model chapter 01 trained:
#
# 1. **a model file that describes itself**: chapter 01 saved its strong baseline
#    {cite}`luo2019bag` with its architecture, input size, normalisation, which output is the
#    embedding (the BNNeck feature $f_i$), the metric, and its training data and results, so
#    `load_model(path)` rebuilds it with no notebook code;
# 2. `reid extract`: the embeddings of a folder of images;
# 3. `reid evaluate`: CMC, mAP (and mINP, MAP@R where this version computes them) on a test
#    set, after **protocol checks** that catch the mistakes that inflate numbers on one's own
#    data, shown here on a test set built with one;
# 4. `reid calibrate`: the distance below which two crops are called the same person, at a
#    false-positive rate you choose, with an interval;
# 5. `reid rank`: each query's ranked gallery as a web page;
# 6. `reid export`: the embedding as ONNX, checked against PyTorch, with CPU latencies.
#
# Each command below is run in this notebook through the same `main()` the console script
# calls; in a shell, type the line after `$`. `reid VERB --help` lists every option.

# %% tags=["parameters"]
profile = "synth"  # smoke | synth | paper (the profile chapter 01 ran with)
dataset = "synthreid"  # paper profile: the dataset chapter 01 trained on
data_root = None  # folder holding the datasets (None: the repository's data/); relative paths: to where you run
results_dir = None  # results JSON go to results_dir/06_your_own_images/<run>.json (None: the repository's results/)
device = "auto"  # auto | cpu | cuda
seed = 0
overrides = {}  # change profile entries, e.g. {"bootstrap": 2000}

# %% [markdown]
# The profiles only size the demonstration: how many of the test identities make up "your"
# query folder, how many bootstrap replicates the calibration draws, how long the ranked lists
# are. The model is always the one chapter 01 trained with the same profile.

# %%
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
from IPython.display import HTML, Image, display

from reid_core.book import check_injected_parameters, resolve_device, resolve_path, select_profile, write_result
from reid_core.cli import main as reid_main
from reid_core.data import build_dataset, preset_root
from reid_core.engine import chapter_model_path, load_model

check_injected_parameters(globals())  # a misspelt or mistyped papermill parameter stops the run here
data_root = resolve_path(data_root, "data", "data_root")  # None: the repository's data/; relative: to the run's folder
results_dir = resolve_path(results_dir, "results", "results_dir")

PROFILES = {
    "smoke": dict(preset="smoke", num_queries=6, bootstrap=200, top=5, leaked=2, latency_repeats=3),
    "synth": dict(preset="synth", num_queries=12, bootstrap=1000, top=10, leaked=100, latency_repeats=20),
    "paper": dict(preset=None, num_queries=12, bootstrap=1000, top=10, leaked=300, latency_repeats=20),
}
cfg = select_profile(PROFILES, profile, overrides)
dataset_dir = preset_root(data_root, cfg["preset"]) if cfg["preset"] else data_root
chapter_model = chapter_model_path(results_dir, "01_reid_basics", profile, dataset)
if not chapter_model.is_file():
    raise FileNotFoundError(
        f"{chapter_model} is missing: this page uses the model chapter 01 trains. Run it first: "
        f"python tools/run_notebooks.py --profile {profile} --only 01"
    )

# A working folder, like a user's: a copy of the model (calibration writes into it), the data, the outputs.
work = results_dir.parent / "runs" / "06_your_own_images" / profile
work.mkdir(parents=True, exist_ok=True)
shutil.copy(chapter_model, work / "baseline.pt")
if (work / "data").is_symlink():
    (work / "data").unlink()
(work / "data").symlink_to(data_root, target_is_directory=True)
os.chdir(work)
data_arg = str(Path("data") / dataset_dir.relative_to(data_root))
dataset_name = "synthreid" if cfg["preset"] else dataset


def reid(*args: object, expect: int = 0) -> None:
    """Show and run one `reid` command line; stop the notebook if it exits otherwise than expected."""
    argv = [str(a) for a in args]
    print("$ reid " + " ".join(shlex.quote(a) for a in argv), flush=True)
    code = reid_main(argv)
    if code != 0:
        print(f"(exit status {code})")
    if code != expect:
        raise RuntimeError(f"reid {argv[0]} exited with {code}, expected {expect}")


# %% [markdown]
# ## 1. The model file
#
# A training checkpoint holds weights; to *use* them one needs to know which network they
# belong to and how to feed it. The model file chapter 01 wrote carries a **model card** with
# exactly that. It is read with `torch.load(weights_only=True)`: tensors, numbers and strings
# only, so opening a model file cannot run code.

# %%
# NBVAL_CHECK_OUTPUT
loaded = load_model("baseline.pt")
card = loaded.card
print(f"architecture: {card.architecture} {card.model_kwargs}, {card.num_classes} training identities")
print(f"input: {card.height}x{card.width}, mean {card.mean}, std {card.std}")
print(
    f"embedding: field {card.embedding_field!r} ({card.embedding}), flip-averaged: {card.flip}, "
    f"L2-normalised: {card.normalize}, metric: {card.metric}"
)
print(f"trained on: {card.training['dataset']}")

# %% [markdown]
# ## 2. Embeddings of a folder
#
# "Your images" here are SynthReID test crops copied into two folders: one query image for each
# of the first test identities, and the whole test gallery. Their file names follow
# Market-1501's `{pid}_c{camera}...`; `reid extract` and `reid rank` need no such names,
# `reid evaluate` and `reid calibrate` do (they need to know who is who).

# %%
# NBVAL_CHECK_OUTPUT
data = build_dataset(dataset_name, dataset_dir, verbose=False)
first = {}
for path, pid, _camid in data.query:
    first.setdefault(pid, path)
queries = [first[pid] for pid in sorted(first)[: cfg["num_queries"]]]
for folder, paths in (("my_images/query", queries), ("my_images/gallery", [p for p, _, _ in data.gallery])):
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for path in paths:
        shutil.copy(path, folder)
print(f"my_images/query: {len(queries)} images; my_images/gallery: {len(data.gallery)} images")

# %%
reid("extract", "--model", "baseline.pt", "--images", "my_images/query", "--out", "query_features.npz")
saved = np.load("query_features.npz")
print("paths:", [str(p) for p in saved["paths"][:3]], "...")
print("features:", saved["features"].shape, saved["features"].dtype)

# %% [markdown]
# ## 3. Evaluation, and the protocol checks
#
# `reid evaluate` extracts the query and gallery features, applies the Market-1501 rule
# (gallery images of the query's identity seen by the query's camera, and junk, are left out of
# its list) and reports CMC and mAP. Before the numbers it checks the set-up:
#
# | check | the mistake | severe? |
# | --- | --- | --- |
# | junk labels | a query labelled junk (-1) or distractor (0): a distractor query "matches" every distractor | yes |
# | query in gallery | one image (path or bytes) as a query and in the gallery: a free hit | unless the rule drops it |
# | train/test overlap | identities or image files in both the training and the test set | yes |
# | queries without a match | every re-ID code skips them: the metric covers fewer queries than meant | only if all |
# | same-camera matches | what the rule removes; wrong camera ids make it remove the wrong images | no |
#
# Each finding is counted, names a few files, and is shown next to the metric as it would be
# without the mistake (or with the skipped queries counted as misses, or the same-camera
# matches left in). On the dataset chapter 01 tested on:

# %%
reid(
    "evaluate",
    "--model",
    "baseline.pt",
    "--data",
    data_arg,
    "--dataset",
    dataset_name,
    "--device",
    device,
    "--json",
    "evaluation.json",
)
evaluation = json.loads(Path("evaluation.json").read_text())["metrics"]
card_seed = loaded.card.training["seed"]  # chapter 01 saved the model of its first seed
chapter01 = json.loads((results_dir / "01_reid_basics" / f"baseline_seed{card_seed}.json").read_text())
print(
    f"chapter 01 reported (seed {card_seed}) R1 {chapter01['rank1']:.2f} mAP {chapter01['mAP']:.2f}; the rebuilt model gives "
    f"R1 {evaluation['rank1']:.2f} mAP {evaluation['mAP']:.2f}"
)
assert abs(evaluation["mAP"] - chapter01["mAP"]) < 0.5, "the model file does not reproduce chapter 01"

# %% [markdown]
# Now a test set built with a classic mistake: some query images (about one in eight in the
# `synth` profile) were also copied into the gallery under another camera's name, as happens
# when one folder of crops is split twice.
# The check finds the copies by their bytes, stops the evaluation, and with
# `--allow-protocol-errors` shows how much they inflate the metrics.

# %%
# NBVAL_CHECK_OUTPUT
shutil.rmtree("leaky_testset", ignore_errors=True)
for folder, items in (("leaky_testset/query", data.query), ("leaky_testset/gallery", data.gallery)):
    os.makedirs(folder)
    for path, _, _ in items:
        shutil.copy(path, folder)
leaked = data.query[:: max(1, len(data.query) // cfg["leaked"])][: cfg["leaked"]]
for k, (path, pid, camid) in enumerate(leaked):
    other_camera = 2 if camid == 0 else 1  # 1-based in file names
    shutil.copy(path, f"leaky_testset/gallery/{pid:04d}_c{other_camera}s9_{k:06d}_01.jpg")
print(f"copied {len(leaked)} query images into leaky_testset/gallery under another camera")

# %%
reid("evaluate", "--model", "baseline.pt", "--data", "leaky_testset", "--dataset", "folder", expect=2)

# %%
reid("evaluate", "--model", "baseline.pt", "--data", "leaky_testset", "--dataset", "folder", "--allow-protocol-errors")

# %% [markdown]
# ## 4. When are two crops the same person?
#
# Ranking needs no threshold; a decision does. `reid calibrate` measures, on the test
# identities (never seen in training), the distance $t_\alpha$ such that calling a pair "the
# same person" when $d < t_\alpha$ gives a false-positive rate of at most $\alpha$ over pairs of
# different people (cross-camera pairs, as the re-ID rule compares). With the negative
# distances sorted, $t_\alpha$ is the $(\lfloor \alpha N_{neg} \rfloor + 1)$-th smallest.
#
# Pairs of one person are not independent (they share that person's looks), so the interval
# comes from a **bootstrap over identities**: each replicate draws the identities with
# replacement, a pair of identities $(a, b)$ weighs the product of their multiplicities, and
# $t_\alpha$ is recomputed. A threshold picked by hand, as users of public re-ID code often
# do, has no such guarantee: its false-positive rate is whatever the data makes it. The
# thresholds are stored in the model file, where `reid rank` reads them.

# %%
reid("calibrate", "--model", "baseline.pt", "--data", data_arg, "--bootstrap", cfg["bootstrap"])
display(Image(filename="baseline_calibration.png"))

# %% [markdown]
# Left: the ROC with a logarithmic false-positive axis (each dot is a calibrated threshold, its
# bar the true-positive rate's interval). Right: the distances of pairs of the same and of
# different people, with each threshold and its interval. Where the two histograms overlap no
# threshold separates them: lowering the false-positive rate costs true positives.

# %% [markdown]
# ## 5. Ranked lists as a web page
#
# `reid rank` writes one HTML page plus a folder of thumbnails, and the top-k as CSV and JSON.
# Green borders mark the same identity, red another (read from the file names; grey when names
# carry none), and each pair is marked *same* or *different* with the calibrated threshold at
# the largest stored rate. File names are escaped and the page loads nothing from the network.

# %%
reid(
    "rank",
    "--model",
    "baseline.pt",
    "--query",
    "my_images/query",
    "--gallery",
    "my_images/gallery",
    "--out",
    "ranked_lists",
    "--top",
    cfg["top"],
)
print(Path("ranked_lists/topk.csv").read_text().splitlines()[0])

# %%
site = results_dir / "06_your_own_images" / "site" / "ranked_lists"  # copied into the book by tools/build_book.py
shutil.rmtree(site, ignore_errors=True)
shutil.copytree("ranked_lists", site)
chromium = shutil.which("chromium") or shutil.which("chromium-browser")
if chromium is None:
    raise RuntimeError("the screenshot of the page needs chromium: `make browser` installs it")
subprocess.run(
    [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={work / 'chrome'}",
        "--window-size=1100,760",
        f"--screenshot={work / 'ranked_lists.png'}",
        (work / "ranked_lists" / "index.html").as_uri(),
    ],
    check=True,
    capture_output=True,
    timeout=120,
)
display(
    HTML(
        '<p>The page itself: <a href="../../pages/06_your_own_images/ranked_lists/index.html">'
        "ranked lists</a> (a screenshot of its top follows).</p>"
    )
)
display(Image(filename=str(work / "ranked_lists.png"), width=900))

# %% [markdown]
# ## 6. ONNX export
#
# `reid export` writes the embedding (the card's field, flip-averaged, as `reid extract`
# computes it) as an ONNX graph with a dynamic batch axis, runs it with onnxruntime on two batch
# sizes and keeps the file only if it matches PyTorch within $10^{-4}$; it then times both on
# the CPU. Input: images resized and normalised as the card says (both are stored in the file's
# metadata).

# %%
reid("export", "--model", "baseline.pt", "--onnx", "baseline.onnx", "--repeats", cfg["latency_repeats"], "--threads", 1)

# %% [markdown]
# The timings come from one process on whatever CPU ran the book, one thread each (with more
# threads, on a machine busy with other work, the figures mostly measure that work), the two
# runtimes alternating run by run; they compare the two on the same machine, nothing more.

# %%
_ = write_result(
    results_dir,
    "06_your_own_images",
    "reid_evaluate",
    method="strong baseline via reid evaluate",
    dataset=f"{dataset_name}/{cfg['preset']}" if cfg["preset"] else dataset_name,
    profile=profile,
    rank1=evaluation["rank1"],
    rank5=evaluation.get("rank5"),
    rank10=evaluation.get("rank10"),
    mAP=evaluation["mAP"],
    device=str(resolve_device(device)),
    params={"model": str(chapter_model)},
)

# %% [markdown]
# ## What to try next
#
# * Point `reid rank` at a folder of your own crops; without identities in the names the page
#   still ranks them and, with a calibrated model, marks same and different.
# * Calibrate at the false-positive rate your application can afford (`--fpr 1e-4`), and check
#   the interval: with few identities it is wide, and only more identities narrow it.
# * Run `reid evaluate --dataset folder` on your own test split before trusting its numbers.
