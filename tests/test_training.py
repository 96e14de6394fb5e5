"""The trainer: seeded determinism, kill/resume, FGSM/PGD on the undefended model, presets, the CLI."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attacks_support import write_imagenet_splits
from gradconceal import conceal
from gradconceal.cli import build_parser, main
from gradconceal.defenses.concealment import GradientConcealment
from gradconceal.errors import GradconcealError
from gradconceal.models.checkpoint import read_checkpoint
from gradconceal.models.zoo import load_model
from gradconceal.training import PRESETS, TrainConfig, fgsm_pair, make_config, pgd_linf, to_command, train, undefended
from gradconceal.training.config import field_names
from gradconceal.training.optim import lr_factor

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian package dataset-fashion-mnist is not installed",
)

# Two batches of 64 training images per epoch, 64 test images: about a second per epoch.
TINY = dict(train_limit=128, test_limit=64, batch_size=64, progress=False)


@pytest.fixture(scope="module", autouse=True)
def _read_fashion_mnist_once():
    """Decompress the IDX files once per module instead of once per ``train`` call (it dominates tiny runs)."""
    import functools

    from gradconceal.training import trainer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "load_split", functools.lru_cache(maxsize=None)(trainer.load_split))
        yield


def _weights(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def fashion_test_batch():
    from gradconceal.data import load_dataset

    dataset = load_dataset("fashion-mnist", split="test", limit=200)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return images, torch.as_tensor(dataset.targets)


def test_fixed_seed_gives_bit_identical_weights_and_leaves_global_rng_alone(tmp_path):
    before = torch.random.get_rng_state()
    first = train("small:cnn", preset="challenge", epochs=1, out_dir=tmp_path / "a", **TINY)
    assert torch.equal(before, torch.random.get_rng_state())
    second = train("small:cnn", preset="challenge", epochs=1, out_dir=tmp_path / "b", **TINY)
    other_seed = train("small:cnn", preset="challenge", epochs=1, seed=1, out_dir=tmp_path / "c", **TINY)
    assert _same(_weights(first.model), _weights(second.model))
    assert not _same(_weights(first.model), _weights(other_seed.model))
    assert first.history[0]["train_loss"] == second.history[0]["train_loss"]


def test_kill_after_one_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    settings = dict(preset="challenge", epochs=2, **{**TINY, "train_limit": 64})
    straight = train("small:resnet", out_dir=tmp_path / "straight", **settings)
    stopped = train("small:resnet", out_dir=tmp_path / "split", stop_after=1, **settings)
    assert not stopped.finished and stopped.checkpoint is None
    assert not (tmp_path / "split" / "model.safetensors").exists()
    resumed = train("small:resnet", out_dir=tmp_path / "split", resume=True, **settings)
    assert resumed.finished and resumed.epochs_done == 2
    assert _same(_weights(straight.model), _weights(resumed.model))
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]
    # only the last epoch's files are kept, and the final checkpoint loads through the zoo
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == [
        ".gradconceal-folder",  # the marker: gradconceal made this folder (holds no state)
        ".gradconceal.lock",  # the folder lock (holds no state)
        "epoch-0002.safetensors",
        "epoch-0002.state.safetensors",
        "last.json",
        "model.safetensors",
    ]
    reloaded = load_model(str(tmp_path / "split" / "model.safetensors"))
    assert _same(_weights(reloaded.net), _weights(resumed.model.net))


def test_resume_refuses_a_changed_config_and_an_existing_run_needs_resume(tmp_path):
    train("small:cnn", epochs=2, stop_after=1, out_dir=tmp_path, **TINY)
    with pytest.raises(GradconcealError, match=r"different config \(lr: 0.002 -> 0.01\)"):
        train("small:cnn", epochs=2, lr=0.01, resume=True, out_dir=tmp_path, **TINY)
    with pytest.raises(GradconcealError, match=r"already holds a training run \(epoch 1\); pass resume=True"):
        train("small:cnn", epochs=2, out_dir=tmp_path, **TINY)


def test_a_second_run_on_a_folder_in_use_refuses_and_resume_clears_stale_temporaries(tmp_path):
    from gradconceal.folders import FolderLock

    train("small:cnn", epochs=2, stop_after=1, out_dir=tmp_path, **TINY)
    stale = [tmp_path / "epoch-0001.state.safetensors.x1y2.tmp", tmp_path / "last.json.a9b8.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")  # what a kill during a save leaves
    with FolderLock(tmp_path):  # another run holds the folder
        with pytest.raises(GradconcealError, match="in use by another gradconceal run"):
            train("small:cnn", epochs=2, resume=True, out_dir=tmp_path, **TINY)
    assert all(path.exists() for path in stale)  # the refused run touched nothing
    result = train("small:cnn", epochs=2, resume=True, out_dir=tmp_path, **TINY)
    assert result.epochs_done == 2
    assert not any(path.exists() for path in stale)
    assert not list(tmp_path.glob("*.tmp"))


def test_training_never_runs_the_concealment_forward(tmp_path):
    base = load_model("small:cnn")
    defended = conceal(base)
    calls = []
    defended.concealment.register_forward_hook(lambda *args: calls.append(1))
    before = _weights(base)
    result = train(defended, preset="challenge", pgd=True, pgd_steps=2, epochs=1, out_dir=tmp_path, **TINY)
    assert calls == []
    assert result.model is base
    assert not _same(before, _weights(base))
    assert defended.concealment is not None  # the defence is still there for test time


def test_undefended_view_strips_defences_and_rejects_hidden_concealment():
    base = load_model("small:cnn")
    assert undefended(conceal(base)) is base
    assert undefended(base) is base
    hidden = torch.nn.Sequential(GradientConcealment(), base)
    with pytest.raises(GradconcealError, match=r"holds a GradientConcealment layer at '0'"):
        undefended(hidden)
    normalising = conceal(base.net, mean=base.mean, std=base.std)
    with pytest.raises(GradconcealError, match="normalises between its defences and its base"):
        undefended(normalising)


def test_fgsm_pair_moves_each_pixel_by_eps_toward_the_right_class(fashion_test_batch):
    model = load_model("fmnist-cnn").eval()
    images, labels = fashion_test_batch
    targets = (labels + 1) % 10
    eps = 0.08
    untargeted, targeted = fgsm_pair(model, images, labels, eps, targets)
    for adversarial in (untargeted, targeted):
        assert (adversarial - images).abs().max().item() <= eps + 1e-6
        assert adversarial.min() >= 0 and adversarial.max() <= 1
    with torch.no_grad():
        clean_acc = (model(images).argmax(1) == labels).float().mean()
        fgsm_acc = (model(untargeted).argmax(1) == labels).float().mean()
        clean_target_p = model(images).softmax(1).gather(1, targets[:, None]).mean()
        targeted_p = model(targeted).softmax(1).gather(1, targets[:, None]).mean()
    assert fgsm_acc < clean_acc - 0.3
    assert targeted_p > clean_target_p + 0.1


def test_pgd_training_buys_real_robustness(fashion_test_batch):
    images, labels = fashion_test_batch
    robust = {}
    for name in ("fmnist-cnn", "fmnist-cnn-pgd"):
        model = load_model(name).eval()
        generator = torch.Generator().manual_seed(0)
        adversarial = pgd_linf(model, images, labels, eps=0.1, steps=10, step_size=0.025, generator=generator)
        assert (adversarial - images).abs().max().item() <= 0.1 + 1e-6
        with torch.no_grad():
            robust[name] = (model(adversarial).argmax(1) == labels).float().mean().item()
    assert robust["fmnist-cnn"] < 0.15
    assert robust["fmnist-cnn-pgd"] > 0.5


def test_presets_follow_the_recipe():
    challenge = make_config("challenge")
    assert (challenge.optimizer, challenge.schedule, challenge.mix) == ("adamax", "step", "cutmix+mixup")
    assert challenge.fgsm and challenge.fgsm_targeted and challenge.fgsm_weight == 1.0
    assert (challenge.fgsm_eps_min, challenge.fgsm_eps_max, challenge.fgsm_eps_count) == (0.001, 0.08, 20)
    default = make_config("default")
    assert (default.optimizer, default.schedule, default.fgsm, default.pgd) == ("adamw", "cosine", False, False)
    pgd = make_config("pgd")
    assert pgd.pgd and pgd.pgd_eps == 0.1 and pgd.clean_weight == 0.0
    assert pgd.pgd_alpha == pytest.approx(2.5 * 0.1 / 7)


def test_schedules_decay_as_documented():
    step = lr_factor(make_config("challenge"), total_steps=100)
    assert [step(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = lr_factor(make_config("default"), total_steps=100)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"lr": -1.0}, r"lr must be > 0, got -1.0"),
        ({"optimizer": "adamx"}, r"optimizer must be one of .*did you mean 'adamax'"),
        ({"fgsm_eps_min": 0.1, "fgsm_eps_max": 0.01}, r"fgsm_eps_min and fgsm_eps_max must satisfy 0 < min <= max"),
        ({"pgd_eps": 0.0}, r"pgd_eps must be in \(0, 1\] \(an Linf budget on \[0, 1\] pixels\), got 0.0"),
        ({"epochs": 0}, r"epochs must be an integer >= 1, got 0"),
        ({"fgsm_eps": 0.1}, r"unknown training setting 'fgsm_eps'.*did you mean"),
        ({"clean_weight": 0.0}, r"the loss would be empty"),
    ],
)
def test_bad_settings_are_clear_errors(settings, message):
    with pytest.raises(GradconcealError, match=message):
        make_config("default", **settings)


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(GradconcealError, match=r"unknown training preset 'challange'.*did you mean 'challenge'"):
        make_config("challange")


def test_recorded_command_parses_back_to_the_same_config():
    config = make_config(
        "challenge", model="small:resnet", epochs=3, train_limit=500, step_milestones=(0.4, 0.8), hflip=False
    )
    command = to_command(config, "challenge", out_dir="runs/x", export="w.safetensors")
    args = build_parser().parse_args(shlex.split(command)[1:])
    given = {n: getattr(args, n) for n in field_names() if n != "model" and getattr(args, n) is not None}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    assert make_config(args.preset, model=args.model, **given) == config
    assert (args.out, args.export) == ("runs/x", "w.safetensors")


def test_cli_trains_and_writes_a_documented_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    export = tmp_path / "mine.safetensors"
    code = main(
        ["--quiet", "train", "small:cnn", "--epochs", "1", "--train-limit", "64", "--test-limit", "64"]
        + ["--out", str(out), "--export", str(export)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "done: 1 epochs" in printed and "on 64 images" in printed
    _, meta = read_checkpoint(export)
    assert meta["model_name"] == "mine" and meta["architecture"] == "small:cnn"
    assert meta["extra"]["command"] == (
        f"gradconceal train small:cnn --preset default --epochs 1 --train-limit 64 --test-limit 64 "
        f"--out {out} --export {export}"
    )
    assert meta["extra"]["test_images"] == 64
    assert 0.0 <= meta["extra"]["test_accuracy"] <= 1.0


def test_a_shipped_name_fine_tunes_that_checkpoint_instead_of_random_weights(tmp_path):
    shipped = load_model("fmnist-cnn")
    result = train("fmnist-cnn", epochs=1, lr=1e-9, out_dir=tmp_path / "run", seed=3, **TINY)
    tuned, fresh = _weights(result.model), _weights(load_model("small:cnn"))
    # parameters barely move at this learning rate (batch-norm running statistics do, by design)
    for name, value in shipped.named_parameters():
        assert torch.allclose(tuned[name], value, atol=1e-5), name
    assert not _same(tuned, fresh)
    assert result.test_accuracy > 0.8  # a random start would sit near 0.1
    _, meta = read_checkpoint(tmp_path / "run" / "model.safetensors")
    assert meta["architecture"] == "small:cnn"
    assert meta["extra"]["command"].startswith("gradconceal train fmnist-cnn --preset default ")


def test_cli_reports_a_user_error_in_one_line(tmp_path, capsys):
    code = main(["train", "small:cnn", "--lr", "-1", "--out", str(tmp_path)])
    assert code == 1
    assert capsys.readouterr().err.strip() == "error: lr must be > 0, got -1.0"


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = ["small:cnn", "--epochs", "4", "--train-limit", "256", "--test-limit", "64", "--batch-size", "64"]
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "gradconceal", "--quiet", "train", *args, "--out", str(straight)], check=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "gradconceal", "--quiet", "train", *args, "--out", str(killed)])
    deadline = time.monotonic() + 120
    while not (killed / "last.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    epoch_at_kill = json.loads((killed / "last.json").read_text())["epoch"]
    if epoch_at_kill >= 4:
        pytest.skip("the run finished before it could be killed")
    command = [sys.executable, "-m", "gradconceal", "--quiet", "train", *args, "--out", str(killed), "--resume"]
    subprocess.run(command, check=True)
    a, _ = read_checkpoint(straight / "model.safetensors")
    b, meta = read_checkpoint(killed / "model.safetensors")
    assert _same(a, b)
    assert meta["extra"]["training"]["epochs"] == 4


def test_config_round_trips_through_json():
    config = make_config("pgd", model="small:resnet", train_limit=20000)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert set(PRESETS) == {"default", "challenge", "pgd"}


def test_trains_a_timm_model_on_an_imagenet_folder(tmp_path):
    write_imagenet_splits(tmp_path, images_per_class=3)
    result = train(
        "timm:test_resnet",
        data=f"imagenet:{tmp_path / 'train'}",
        test_data=f"imagenet:{tmp_path / 'val'}",
        epochs=1,
        batch_size=4,
        fgsm=True,
        out_dir=tmp_path / "run",
        progress=False,
    )
    assert result.finished and result.test_images == 6
    _, meta = read_checkpoint(result.checkpoint)
    assert meta["architecture"] == "timm:test_resnet"
    assert f"--test-data imagenet:{tmp_path / 'val'}" in meta["extra"]["command"]
    assert load_model(str(result.checkpoint)).input_size == result.model.input_size
