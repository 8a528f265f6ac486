"""Fault injection: every way a run could finish with exit code 0 and a wrong or mislabelled result.

Each case fails on the code before these checks existed (the old behaviour is in each test's
docstring) and now either stops with an error that names the thing and what was expected, or
is handled and reported:

1. a stale checkpoint of another recipe, model, optimizer or dataset is never resumed;
2. a misspelt or mistyped parameter stops the run, on both routes (run_notebooks.py, papermill);
3. relative folders are relative to where the run starts, not to ``notebooks/``;
4. no file of a dataset folder is skipped without a word;
5. smaller ones: ``checkpoint_every=0``, a killed save's temporary file, ``make book FORCE=0``,
   a damaged cached ImageNet file, a softmax head of the wrong size, string pids;

and ``kill -9`` during training and during a checkpoint save, then a resumed run that ends with
the very weights of an uninterrupted one.
"""

from __future__ import annotations

import codecs
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from tiny_layouts import make_market_like, make_msmt17
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import ResNet18_Weights

from reid_core.book import (
    REPOSITORY_ROOT,
    check_injected_parameters,
    check_parameters,
    parse_parameters,
    resolve_path,
    select_profile,
)
from reid_core.data import MSMT17, DatasetLayoutError, DatasetNote, Market1501
from reid_core.engine import FINGERPRINT_KEY, CheckpointMismatchError, TrainConfig, Trainer, load_checkpoint
from reid_core.evaluation import evaluate_rank
from reid_core.losses import build_metric_criterion
from reid_core.models import build_backbone

sys.path.insert(0, str(ROOT / "tools"))
import run_notebooks  # noqa: E402  (tools/ is not a package)


# ------------------------------------------------------------------ 1. stale resume
class _Net(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 8))
        self.cls = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.body(x))  # (B, C)


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"id": nn.functional.cross_entropy(logits, labels)}


def _loader(samples: int = 24) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(samples) % 3
    return DataLoader(TensorDataset(torch.randn(samples, 3, 2, 2, generator=g), y), batch_size=8)


def _train(folder: Path, classes: int = 3, samples: int = 24, **changes: object) -> Trainer:
    recipe = dict(
        epochs=2,
        optimizer="adam",
        lr=0.01,
        scheduler="step",
        milestones=(),
        warmup_epochs=0,
        progress=False,
        seed=0,
        checkpoint_dir=str(folder),
    )
    recipe.update(changes)
    torch.manual_seed(0)
    trainer = Trainer(_Net(classes), _ce, _loader(samples), TrainConfig(**recipe), device="cpu")
    trainer.fit()
    return trainer


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lr": 0.05}, "recipe.lr: checkpoint 0.01, this run 0.05"),
        ({"seed": 7}, "recipe.seed: checkpoint 0, this run 7"),
        ({"epochs": 1}, "recipe.epochs: the checkpoint has trained 2 of 2 epochs, this run asks for 1"),
        ({"epochs": 3, "scheduler": "cosine"}, "recipe.scheduler: checkpoint 'step', this run 'cosine'"),
        ({"optimizer": "sgd"}, "optimizer.class: checkpoint 'Adam', this run 'SGD'"),
        (
            {"classes": 5},
            "model.state: 4 entries in the checkpoint, 4 in this run; first difference: "
            "checkpoint 'cls.weight (3, 8) float32', this run 'cls.weight (5, 8) float32'",
        ),
        ({"samples": 32}, "data.samples: checkpoint 24, this run 32"),
    ],
)
def test_another_runs_checkpoint_is_not_resumed(tmp_path: Path, change: dict, named: str) -> None:
    """Before: lr/seed/epochs were ignored ("resumed at epoch 2", nothing trained, the first run's
    accuracy filed under the second's settings); another optimizer raised KeyError 'step', another
    model a raw size mismatch."""
    _train(tmp_path)
    saved = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(CheckpointMismatchError) as info:
        _train(tmp_path, **change)
    message = str(info.value)
    assert named in message
    assert str(tmp_path) in message and "afresh" in message and "checkpoint_dir" in message
    assert (tmp_path / "last.pt").read_bytes() == saved  # nothing was trained or written


def test_epochs_may_grow_only_where_the_schedule_of_the_trained_epochs_stays(tmp_path: Path) -> None:
    _train(tmp_path / "step", epochs=2, milestones=(3,))
    grown = _train(tmp_path / "step", epochs=4, milestones=(3,))  # a step schedule does not depend on the total
    straight = _train(tmp_path / "straight", epochs=4, milestones=(3,))
    for key, value in straight.model.state_dict().items():
        assert torch.equal(grown.model.state_dict()[key], value)
    _train(tmp_path / "cosine", epochs=2, scheduler="cosine")
    with pytest.raises(CheckpointMismatchError, match="recipe.epochs: checkpoint 2, this run 4, and the cosine"):
        _train(tmp_path / "cosine", epochs=4, scheduler="cosine")


def test_another_dataset_of_the_same_size_is_not_resumed(tmp_path: Path) -> None:
    _train(tmp_path)
    images = torch.randn(24, 3, 2, 2, generator=torch.Generator().manual_seed(1))  # not _loader's images
    other = DataLoader(TensorDataset(images, torch.arange(24) % 3), batch_size=8)
    config = TrainConfig(
        epochs=2,
        optimizer="adam",
        lr=0.01,
        scheduler="step",
        milestones=(),
        warmup_epochs=0,
        progress=False,
        seed=0,
        checkpoint_dir=str(tmp_path),
    )
    with pytest.raises(CheckpointMismatchError, match="data.items_sha256"):
        Trainer(_Net(), _ce, other, config, device="cpu").fit()


def test_a_checkpoint_without_fingerprint_is_not_resumed(tmp_path: Path) -> None:
    _train(tmp_path)
    state = load_checkpoint(tmp_path / "last.pt")
    del state[FINGERPRINT_KEY]
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointMismatchError, match="holds no fingerprint"):
        _train(tmp_path)


class _SamplerThatGrows(torch.utils.data.Sampler[int]):
    """Like the graph sampler: another number of batches once its first epoch has started."""

    def __init__(self) -> None:
        self.size = 16

    def set_epoch(self, epoch: int) -> None:
        self.size = 24

    def __iter__(self):  # noqa: ANN204
        return iter(range(self.size))

    def __len__(self) -> int:
        return self.size


def test_a_loader_whose_length_changes_during_the_run_still_resumes(tmp_path: Path) -> None:
    def fit(epochs: int) -> Trainer:
        torch.manual_seed(0)
        data = TensorDataset(torch.randn(24, 3, 2, 2, generator=torch.Generator().manual_seed(0)), torch.arange(24) % 3)
        loader = DataLoader(data, batch_size=8, sampler=_SamplerThatGrows())
        config = TrainConfig(
            epochs=epochs,
            optimizer="adam",
            lr=0.01,
            scheduler="step",
            milestones=(),
            warmup_epochs=0,
            progress=False,
            seed=0,
            checkpoint_dir=str(tmp_path),
        )
        trainer = Trainer(_Net(), _ce, loader, config, device="cpu")
        trainer.fit()
        return trainer

    fit(1)
    assert len(fit(2).state.history) == 2  # resumed: the fingerprint is the one taken when each run started


def test_the_same_run_resumes(tmp_path: Path) -> None:
    first = _train(tmp_path)
    again = _train(tmp_path)  # resumes at its last epoch: nothing left to train, same weights
    assert again.state.history == first.state.history


# ----------------------------------------------------- 2. misspelt and mistyped parameters
CELL = (
    'profile = "synth"  # smoke | synth | paper\ndataset = "synthreid"\nseed = 0\nlr = 1e-3\noverrides = {}\n'
    "data_root = None\n"
)


def test_unknown_parameter_lists_the_valid_ones_and_a_close_match() -> None:
    """Before: papermill only warned; with ``datset`` misspelt the run used the default dataset."""
    declared = parse_parameters(CELL)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['datset'\]") as info:
        check_parameters({"datset": "market1501"}, declared, "nb.py")
    assert "'datset': did you mean 'dataset'?" in str(info.value)
    assert "['profile', 'dataset', 'seed', 'lr', 'overrides', 'data_root']" in str(info.value)
    with pytest.raises(ValueError, match="through overrides"):
        check_parameters({"epochs": 1}, declared, "nb.py")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("seed", "abc", "parameter 'seed' must be an int (its default is 0), got str 'abc'"),
        ("seed", 2.5, "parameter 'seed' must be an int (its default is 0), got float 2.5"),
        ("seed", True, "parameter 'seed' must be an int (its default is 0), got bool True"),
        ("overrides", '{"epochs": 2}', "parameter 'overrides' must be a dict"),
        ("dataset", 3, "parameter 'dataset' must be a str"),
    ],
)
def test_wrong_parameter_type_names_the_parameter(name: str, value: object, message: str) -> None:
    """Before: ``-p seed abc`` failed with "not all arguments converted during string formatting"."""
    with pytest.raises(TypeError) as info:
        check_parameters({name: value}, parse_parameters(CELL), "nb.py")
    assert message in str(info.value)


def test_right_parameter_types_pass() -> None:
    check_parameters(
        {"seed": 3, "lr": 1, "overrides": {"epochs": 2}, "data_root": "/x", "profile": "paper"},
        parse_parameters(CELL),
        "nb.py",
    )  # a float takes an int; a None default takes anything


def test_parameters_cell_must_be_literal_assignments() -> None:
    with pytest.raises(ValueError, match="line 2: expected 'name = literal'"):
        parse_parameters("seed = 0\nprint(seed)\n")
    with pytest.raises(ValueError, match="the value of 'seed' is not a literal"):
        parse_parameters("seed = int('3')\n")


def test_in_notebook_check_reads_papermills_injected_cell() -> None:
    """What the notebooks call after their parameters cell (the papermill pipe's route)."""
    injected = '# Parameters\nprofile = "paper"\ndatset = "market1501"\n'
    namespace = {
        "In": ["", CELL, injected, "check(globals())"],
        "profile": "paper",
        "dataset": "synthreid",
        "seed": 0,
        "lr": 1e-3,
        "overrides": {},
        "data_root": None,
        "datset": "market1501",
    }
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['datset'\]"):
        check_injected_parameters(namespace)
    namespace.update(In=["", CELL, '# Parameters\nseed = "abc"\n', "check(globals())"], seed="abc")
    with pytest.raises(TypeError, match="parameter 'seed' must be an int"):
        check_injected_parameters(namespace)
    namespace.update(In=["", CELL, "check(globals())"], seed=0)
    check_injected_parameters(namespace)  # run by hand: nothing injected, nothing to check


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": "2"}, "overrides['epochs'] must be an int like the profiles' values [1, 8], got str '2'"),
        ({"epochs": 2.5}, "overrides['epochs'] must be an int like the profiles' values [1, 8], got float 2.5"),
        ({"flip": 1}, "overrides['flip'] must be a bool"),
        ({"milestones": 5}, "overrides['milestones'] must be a list"),
    ],
)
def test_override_keeps_the_type_of_the_setting(overrides: dict, message: str) -> None:
    """Before: ``{"epochs": "2"}`` failed with "'<' not supported"; ``{"epochs": 2.5}`` ran 3 epochs."""
    profiles = {
        "smoke": {"epochs": 1, "lr": 1e-3, "flip": False, "milestones": (), "max_iters": 3},
        "synth": {"epochs": 8, "lr": 2e-3, "flip": True, "milestones": (4,), "max_iters": None},
    }
    with pytest.raises(TypeError) as info:
        select_profile(profiles, "synth", overrides)
    assert message in str(info.value)
    accepted = select_profile(profiles, "smoke", {"lr": 1, "milestones": [2, 3], "max_iters": None})
    assert accepted["lr"] == 1 and accepted["milestones"] == [2, 3] and accepted["max_iters"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-p", "datset", "market1501"], "did you mean 'dataset'?"),
        (["-p", "epochs", "1"], "unknown parameter(s) ['epochs']"),
        (["-p", "seed", "abc"], "parameter 'seed' must be an int (its default is 0), got str 'abc'"),
        (["-p", "overrides", '{"epochs": 2.5}', "--only", "01"], None),  # reaches the notebook: select_profile
    ],
)
def test_run_notebooks_checks_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str | None
) -> None:
    ran: list[Path] = []
    monkeypatch.setattr(run_notebooks, "run_notebook", lambda source, *a, **k: ran.append(source))
    if message is None:
        run_notebooks.main(["--profile", "smoke", "--out-dir", str(tmp_path), *argv])
        assert [p.stem for p in ran] == ["01_reid_basics"]
        return
    with pytest.raises(SystemExit) as info:
        run_notebooks.main(["--profile", "smoke", "--out-dir", str(tmp_path), *argv])
    assert message in str(info.value) and not ran  # stopped before the first notebook


def test_run_notebooks_passes_a_parameter_only_to_the_notebooks_that_declare_it(capsys: pytest.CaptureFixture) -> None:
    sources = run_notebooks.notebook_sources(["01", "03"])
    chosen = run_notebooks.notebook_run_parameters(sources, {"profile": "paper"}, [("cuhk03_split", "labeled")])
    assert "cuhk03_split" not in chosen[sources[0]] and chosen[sources[1]]["cuhk03_split"] == "labeled"
    assert "01_reid_basics has no parameter 'cuhk03_split'" in capsys.readouterr().out


@pytest.mark.notebook
def test_papermill_pipe_stops_on_a_misspelt_parameter(tmp_path: Path) -> None:
    """The README's pipe: the notebook itself rejects ``datset`` before it reads any data."""
    bin_dir = Path(sys.executable).parent
    pipe = (
        f"{bin_dir / 'jupytext'} --to ipynb -o - {ROOT / 'notebooks' / '01_reid_basics.py'} | "
        f"{bin_dir / 'papermill'} - out.ipynb -k python3 --no-progress-bar -p profile paper -p datset market1501"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipe], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert result.returncode != 0
    assert "unknown parameter(s) ['datset']" in result.stderr and "did you mean 'dataset'?" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


# ------------------------------------------------------------------------ 3. relative paths
def test_relative_folders_are_relative_to_where_the_run_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: ``-p data_root reldata`` was read as ``notebooks/reldata``."""
    monkeypatch.chdir(tmp_path)
    assert resolve_path("reldata", "data", "data_root") == tmp_path / "reldata"
    assert resolve_path(None, "data", "data_root") == REPOSITORY_ROOT / "data"  # the default: the repository's
    assert resolve_path("~/x", "data", "data_root") == Path.home() / "x"
    with pytest.raises(TypeError, match="data_root must be a folder"):
        resolve_path(2024, "data", "data_root")  # type: ignore[arg-type]
    sources = run_notebooks.notebook_sources(["01"])
    chosen = run_notebooks.notebook_run_parameters(sources, {"profile": "paper"}, [("data_root", "reldata")])
    assert chosen[sources[0]]["data_root"] == str(tmp_path / "reldata")


# --------------------------------------------------------------------- 4. skipped files
def test_dangling_and_looping_links_are_errors(tmp_path: Path) -> None:
    """Before: both were dropped from the listing, and the gallery just shrank."""
    root = make_market_like(tmp_path / "market1501")
    gallery = root / "bounding_box_test"
    link = gallery / "0099_c2s1_009901_00.jpg"
    link.symlink_to(tmp_path / "unmounted" / "0099_c2s1_009901_00.jpg")
    with pytest.raises(DatasetLayoutError, match="does not exist") as info:
        Market1501(root, verbose=False)
    assert str(link) in str(info.value) and "unmounted" in str(info.value)
    link.unlink()
    loop = gallery / "0099_c2s1_009902_00.jpg"
    loop.symlink_to(loop)
    with pytest.raises(DatasetLayoutError, match="loops back on itself"):
        Market1501(root, verbose=False)


def test_every_entry_not_read_is_counted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Before: folders and links to folders were dropped without a word."""
    root = make_market_like(tmp_path / "market1501")
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"x")
    (root / "query" / "more").mkdir()
    (root / "bounding_box_test" / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    data = Market1501(root, verbose=True)
    out = capsys.readouterr().out
    assert f"note: 3 entries under '{root}' not read" in out
    assert all(name in out for name in ("bounding_box_train/Thumbs.db", "query/more/", "bounding_box_test/elsewhere/"))
    assert len(data.gallery) == 8 * 2 + 1  # the links and folders are not images: nothing else changed
    with pytest.warns(DatasetNote, match="3 entries"):
        Market1501(root, verbose=False)  # quiet readers warn instead of printing


def test_extension_case_twins_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_market_like(tmp_path / "market1501")
    original = root / "query" / "0009_c1s1_000900_00.jpg"
    shutil.copy(original, original.with_suffix(".JPG"))
    Market1501(root, verbose=True)
    out = capsys.readouterr().out
    assert "1 image(s)" in out and "0009_c1s1_000900_00.JPG and query/0009_c1s1_000900_00.jpg" in out


def test_msmt17_duplicated_line_and_byte_order_mark_are_reported(tmp_path: Path) -> None:
    """Before: a duplicated line counted its image twice; a BOM made the first image "missing"."""
    folder = make_msmt17(tmp_path)
    gallery_list = folder / "list_gallery.txt"
    lines = gallery_list.read_text().splitlines(keepends=True)
    gallery_list.write_text("".join(lines + [lines[0]]))
    query_list = folder / "list_query.txt"
    query_list.write_bytes(codecs.BOM_UTF8 + query_list.read_bytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = MSMT17(tmp_path, verbose=False)
    notes = [str(w.message) for w in caught if issubclass(w.category, DatasetNote)]
    assert any("list_query.txt' starts with a UTF-8 byte-order mark" in n for n in notes)
    assert any(f"line {len(lines) + 1} repeats line 1" in n and "list_gallery.txt" in n for n in notes)
    assert len(data.gallery) == len(lines) and len(data.query) == 8
    label = lines[0].split()[1]
    gallery_list.write_text("".join(lines + [lines[0].replace(f" {label}", f" {int(label) + 1}")]))
    with pytest.raises(DatasetLayoutError, match="again with another pid"):
        MSMT17(tmp_path, verbose=False)


# ------------------------------------------------------------------------- 5. smaller ones
@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"checkpoint_every": 0}, ValueError, "TrainConfig.checkpoint_every must be >= 1, got 0"),
        ({"epochs": 2.5}, TypeError, "TrainConfig.epochs must be an int, got float 2.5"),
        ({"epochs": "2"}, TypeError, "TrainConfig.epochs must be an int, got str '2'"),
        ({"max_iters_per_epoch": 0}, ValueError, "TrainConfig.max_iters_per_epoch must be >= 1"),
    ],
)
def test_train_config_is_checked_at_construction(changes: dict, error: type, message: str) -> None:
    """Before: ``checkpoint_every=0`` divided by zero after a whole epoch."""
    with pytest.raises(error) as info:
        TrainConfig(**changes)
    assert message in str(info.value)


def test_a_killed_saves_temporary_file_is_removed_at_the_next_start(tmp_path: Path) -> None:
    stale = tmp_path / ".last.pt.k3j9x2.tmp"
    tmp_path.mkdir(exist_ok=True)
    stale.write_bytes(b"\0" * 1024)
    with pytest.warns(UserWarning, match=r"removed .*\.last\.pt\.k3j9x2\.tmp"):
        _train(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_book_force_0_does_not_force() -> None:
    def dry_run(force: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "-n", "-C", str(ROOT), "notebooks", f"FORCE={force}"], capture_output=True, text=True
        )

    assert "run_notebooks.py" in dry_run("0").stdout and "--force" not in dry_run("0").stdout
    assert "--force" in dry_run("1").stdout
    assert dry_run("2").returncode != 0 and "FORCE must be 1" in dry_run("2").stderr


def test_damaged_cached_imagenet_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Before: "This machine looks offline" although the file was there, only damaged."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = tmp_path / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir()
    cached.write_bytes(b"PK\x03\x04 cut short")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached file must not be downloaded again")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(RuntimeError) as info:
        build_backbone("resnet18", pretrained=True)
    message = str(info.value)
    assert str(cached) in message and "delete it" in message and "offline" not in message


def test_softmax_head_of_the_wrong_size_names_the_embedding() -> None:
    """Before: a raw matmul error ("mat1 and mat2 shapes cannot be multiplied")."""
    criterion = build_metric_criterion("softmax", embedding_dim=8, num_classes=3)
    with pytest.raises(ValueError, match=r"embeddings must be \(B, 8\) \(the head's embedding_dim\), got \(4, 5\)"):
        criterion(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))


def test_string_pids_name_the_argument() -> None:
    """Before: a torch TypeError ("can't convert np.ndarray of type numpy.str_") naming no argument."""
    dist = np.random.default_rng(0).random((2, 3))
    with pytest.raises(ValueError, match=r"q_pids must hold integers, got numpy dtype <U1 \(e\.g\. np\.str_\('a'\)\)"):
        evaluate_rank(dist, np.array(["a", "b"]), np.array([1, 2, 3]), np.array([0, 0]), np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="g_camids must hold integers"):
        evaluate_rank(dist, np.array([1, 2]), np.array([1, 2, 3]), np.array([0, 0]), ["c1", "c2", "c3"])


# ------------------------------------------------------------------ kill -9, then resume
def _training(checkpoints: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fault_training.py"), str(checkpoints), str(out), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, f"{stdout}\n{stderr}"
    return stderr


def _kill_when_hanging(process: subprocess.Popen[str], signal_file: Path) -> None:
    deadline = time.monotonic() + 300
    while not signal_file.exists():
        assert process.poll() is None, f"the run ended before the fault: {process.communicate()}"
        assert time.monotonic() < deadline, "the run never reached the fault"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    folder = tmp_path_factory.mktemp("straight")
    _finish(_training(folder / "checkpoints", folder / "weights.pt"))
    return torch.load(folder / "weights.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["iteration:15", "save:2"])  # 6 iterations an epoch: 15 is in epoch 3
def test_kill_9_then_resume_gives_the_uninterrupted_weights(
    tmp_path: Path, fault: str, uninterrupted: dict[str, torch.Tensor]
) -> None:
    checkpoints, signal_file = tmp_path / "checkpoints", tmp_path / "hanging"
    _kill_when_hanging(
        _training(checkpoints, tmp_path / "never.pt", "--hang", fault, "--signal", str(signal_file)), signal_file
    )
    done = load_checkpoint(checkpoints / "last.pt")["epoch"]
    temporary = [p for p in checkpoints.iterdir() if p.name != "last.pt"]
    if fault.startswith("save"):
        assert done == 1 and len(temporary) == 1  # killed inside the second save: its temporary file is left
    else:
        assert done == 2 and not temporary
    stderr = _finish(_training(checkpoints, tmp_path / "resumed.pt"))
    assert ("removed" in stderr) == fault.startswith("save")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.pt"]
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert resumed.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), f"{key} differs from the uninterrupted run's"
