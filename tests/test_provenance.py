"""Numbers that cannot be wrong without a word: records bound to the weights, images, settings and attack code
that made them; folders gradconceal owns; records lost under a run; names that stay distinct on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch
from torch import nn

from gradconceal.errors import GradconcealError
from gradconceal.evaluation.api import evaluate
from gradconceal.evaluation.store import RecordStore
from gradconceal.folders import MARKER_FILE

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def _spec(data: Any, models: Any = ("fmnist-cnn",), **extra: Any) -> Dict[str, Any]:
    return {"models": list(models), "defenses": ["none"], "data": data,
            "attacks": [{"label": "FGSM", "attack": "fgsm", "norm": "linf", "eps": "8/255"}],
            "batch_size": 4, "device": "cpu", "seed": 0, "audit": False, "gallery": 0, **extra}


def _numbers(results) -> Dict[str, Any]:
    return {f"{r.model}/{r.defense}": (r.clean.k, r.clean.n, {k: (m.ar.k, m.ar.n) for k, m in r.attacks.items() if m})
            for r in results.rows}


def _fmnist_folder(folder: Path, count: int = 8) -> Path:
    """A Fashion-MNIST folder (idx files) holding the first ``count`` real test images."""
    from gradconceal.data import load_dataset

    try:
        data = load_dataset("fashion-mnist", limit=count)
    except GradconcealError as error:
        pytest.skip(f"Fashion-MNIST not available: {error}")
    images = np.stack([(data[i][0][0].numpy() * 255).round().astype(np.uint8) for i in range(count)])
    _write_idx(folder / "t10k-images-idx3-ubyte", images, 2051)
    _write_idx(folder / "t10k-labels-idx1-ubyte", np.array(data.targets[:count]), 2049)
    return folder


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _checkpoint(path: Path, scale: float) -> Path:
    """The shipped fmnist-cnn's architecture with its weights scaled (another model saved at the same path)."""
    from gradconceal.models.checkpoint import save_checkpoint
    from gradconceal.models.zoo import load_model

    model = load_model("fmnist-cnn")
    with torch.no_grad():
        for parameter in model.net.parameters():
            parameter.mul_(scale)
    return save_checkpoint(model, path, architecture="small:cnn")


# -- records outlive what made them ---------------------------------------------------------------------
def test_a_retrained_checkpoint_at_the_same_path_is_never_reused(tmp_path: Path) -> None:
    data = {"source": f"fashion-mnist:{_fmnist_folder(tmp_path / 'data')}"}
    weights = _checkpoint(tmp_path / "model.safetensors", 1.0)
    spec = _spec(data, models=[str(weights)])
    first = evaluate(spec, tmp_path / "out", quiet=True, plots=False)
    _checkpoint(weights, -0.5)  # retrained and saved at the same path
    with pytest.raises(GradconcealError, match=r"computed with other weights \(fingerprint [0-9a-f]{16} now "
                                               r"[0-9a-f]{16}\).*new --out, or add --recompute"):
        evaluate(spec, tmp_path / "out", quiet=True, plots=False)
    fresh = evaluate(spec, tmp_path / "fresh", quiet=True, plots=False)
    assert _numbers(fresh) != _numbers(first)  # the new weights give other numbers ...
    replaced = evaluate(spec, tmp_path / "out", quiet=True, plots=False, recompute=True)
    assert _numbers(replaced) == _numbers(fresh)  # ... which --recompute reports, with no old record left
    assert replaced.info["computed_records"] == len(RecordStore(tmp_path / "out").load())


def test_an_in_memory_model_whose_weights_changed_is_refused(tmp_path: Path) -> None:
    from gradconceal.models.zoo import load_model

    data = {"source": f"fashion-mnist:{_fmnist_folder(tmp_path / 'data')}"}
    model = load_model("fmnist-cnn")
    spec = _spec(data, models=["mine"])
    evaluate(spec, tmp_path / "out", quiet=True, plots=False, models={"mine": model})
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    with pytest.raises(GradconcealError, match="other weights"):
        evaluate(spec, tmp_path / "out", quiet=True, plots=False, models={"mine": model})


def test_a_changed_image_is_refused_and_more_images_keep_every_record(tmp_path: Path) -> None:
    folder = _fmnist_folder(tmp_path / "data")
    spec = _spec({"source": f"fashion-mnist:{folder}", "n": 6})
    evaluate(spec, tmp_path / "out", quiet=True, plots=False)
    more = evaluate({**spec, "data": {"source": f"fashion-mnist:{folder}", "n": 8}}, tmp_path / "out", quiet=True,
                    plots=False)
    assert more.info["computed_records"] == 2 * 2  # the two new images' clean and FGSM records only
    path = folder / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[16 + 3 * 28 * 28 + 400] ^= 0xFF  # one pixel of image 3
    path.write_bytes(bytes(raw))
    with pytest.raises(GradconcealError, match=r"computed with another image 3 \(the data changed\)"):
        evaluate(spec, tmp_path / "out", quiet=True, plots=False)


def test_records_of_older_attack_code_are_refused(tmp_path: Path, monkeypatch) -> None:
    from gradconceal.evaluation import plan

    spec = _spec({"source": f"fashion-mnist:{_fmnist_folder(tmp_path / 'data')}"})
    evaluate(spec, tmp_path / "out", quiet=True, plots=False)
    monkeypatch.setattr(plan, "ATTACK_SEMANTICS_VERSION", plan.ATTACK_SEMANTICS_VERSION + 1)
    with pytest.raises(GradconcealError, match=r"older attack code \(semantics version \d+, now \d+\)"):
        evaluate(spec, tmp_path / "out", quiet=True, plots=False)


def test_results_json_records_what_made_the_numbers(tmp_path: Path) -> None:
    from gradconceal._version import __version__

    results = evaluate(_spec({"source": f"fashion-mnist:{_fmnist_folder(tmp_path / 'data')}"}), tmp_path / "out",
                       quiet=True, plots=False)
    provenance = json.loads((tmp_path / "out" / "results.json").read_text())["provenance"]
    assert provenance["gradconceal"] == __version__ and provenance["attack_semantics"] >= 1
    assert set(provenance["weights"]) == {"fmnist-cnn"} and len(provenance["weights"]["fmnist-cnn"]) == 16
    assert len(provenance["images"]) == 16 and set(provenance["jobs"]) == {"fmnist-cnn/vanilla/clean",
                                                                            "fmnist-cnn/vanilla/FGSM"}
    if (Path(__file__).resolve().parents[1] / ".git").exists():
        assert len(provenance.get("git_commit", "")) == 40
    keys = {r.job for r in RecordStore(tmp_path / "out").load().values()}
    assert keys == set(provenance["jobs"].values()) and results.info["computed_records"] == 16


def test_an_older_folder_re_reports_but_never_resumes(tmp_path: Path) -> None:
    import dataclasses

    from gradconceal.evaluation.plan import plan_attacks, plan_jobs
    from gradconceal.evaluation.spec import load_spec

    spec = _spec({"source": "digits", "n": 6}, models=["mine"])
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    first = evaluate(spec, tmp_path / "old", quiet=True, plots=False, models={"mine": model})
    # what records version 1 wrote: job keys without weights or attack code, no image fingerprints
    parsed = load_spec(spec, extra_models=["mine"])
    legacy = {job.labels: job.legacy_key for job in plan_jobs(parsed, plan_attacks(parsed, (1, 8, 8)), {"mine": "w"},
                                                                ("mine",))}
    store = RecordStore(tmp_path / "old")
    store.rewrite([dataclasses.replace(r, job=legacy[r.key[:3]], image=None) for r in store.load().values()])
    again = evaluate(spec, tmp_path / "old", quiet=True, plots=False, models={"mine": model})
    assert _numbers(again) == _numbers(first) and again.info["computed_records"] == 0
    extended = {**spec, "attacks": [*spec["attacks"], {"label": "FGSM 4/255", "attack": "fgsm", "eps": "4/255"}]}
    with pytest.raises(GradconcealError, match=r"made by an older gradconceal .*re-reported as it is but not resumed"):
        evaluate(extended, tmp_path / "old", quiet=True, plots=False, models={"mine": model})


# -- the user's files and the run's own files -----------------------------------------------------------
def test_a_folder_with_the_users_files_is_refused_and_left_untouched(tmp_path: Path) -> None:
    mine = {name: f"my own {name}\n" for name in ("report.md", "results.json", "results.csv", "records.jsonl")}
    for name, text in mine.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(GradconcealError, match=r"holds files gradconceal did not write \(records.jsonl, report.md, "
                                               r"results.csv, results.json\).*choose another --out"):
        evaluate(_spec({"source": "digits"}, models=["mine"]), tmp_path, quiet=True, plots=False,
                 models={"mine": nn.Sequential(nn.Flatten(), nn.Linear(64, 10))})
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == mine  # nothing added, nothing changed


def test_a_records_file_removed_during_the_run_stops_it_without_a_report(tmp_path: Path, monkeypatch) -> None:
    from gradconceal.evaluation import run

    clean_pass = run.Runner._clean_pass

    def then_remove(self, *args, **kwargs):  # what a user's `rm records.jsonl` mid-run does
        out = clean_pass(self, *args, **kwargs)
        (self.out_dir / "records.jsonl").unlink()
        return out

    monkeypatch.setattr(run.Runner, "_clean_pass", then_remove)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(GradconcealError, match="records.jsonl was removed or replaced while this run was writing"):
        evaluate(_spec({"source": "digits", "n": 8}, models=["mine"]), tmp_path / "out", quiet=True, plots=False,
                 models={"mine": model})
    assert not (tmp_path / "out" / "report.md").exists() and not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("labels", [("A/B", "A_B"), ("PGD", "pgd"), ("x y", "x?y")])
def test_labels_that_would_share_a_file_name_are_refused_at_check(tmp_path: Path, labels) -> None:
    from gradconceal.evaluation.plan import plan_attacks
    from gradconceal.evaluation.spec import load_spec

    attacks = [{"label": label, "attack": "fgsm", "eps": "8/255"} for label in labels]
    spec = load_spec(_spec({"source": "digits"}, attacks=attacks))
    with pytest.raises(GradconcealError, match=r"attack labels .* would share the file name"):
        plan_attacks(spec, (1, 8, 8))


def test_owned_folders_get_a_marker(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    evaluate(_spec({"source": "digits", "n": 4}, models=["mine"]), tmp_path / "new", quiet=True, plots=False,
             models={"mine": model})
    assert (tmp_path / "new" / MARKER_FILE).is_file()


@pytest.mark.parametrize("change, reason", [
    ({"seed": 1}, "another seed"),
    ({"dtype": "float64"}, "another dtype"),
    ({"defenses": [{"name": "gcm", "label": "vanilla", "w": 1e12}]}, "other defence settings"),
    ({"attacks": [{"label": "FGSM", "attack": "fgsm", "norm": "linf", "eps": "4/255"}]}, "other attack settings"),
])
def test_every_setting_that_decides_a_record_is_part_of_its_key(tmp_path: Path, change, reason) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    spec = _spec({"source": "digits", "n": 4}, models=["mine"])
    evaluate(spec, tmp_path / "out", quiet=True, plots=False, models={"mine": model})
    with pytest.raises(GradconcealError, match=reason):
        evaluate({**spec, **change}, tmp_path / "out", quiet=True, plots=False, models={"mine": model})


def test_weights_given_beside_a_zoo_name_are_fingerprinted(tmp_path: Path) -> None:
    data = {"source": f"fashion-mnist:{_fmnist_folder(tmp_path / 'data', count=4)}"}
    weights = _checkpoint(tmp_path / "w.safetensors", 1.0)
    spec = _spec(data, models=[{"name": "small:cnn", "weights": str(weights), "label": "cnn"}])
    evaluate(spec, tmp_path / "out", quiet=True, plots=False)
    _checkpoint(weights, 2.0)
    with pytest.raises(GradconcealError, match="other weights"):
        evaluate(spec, tmp_path / "out", quiet=True, plots=False)


def test_a_records_file_replaced_during_the_run_stops_it(tmp_path: Path, monkeypatch) -> None:
    from gradconceal.evaluation import run

    clean_pass = run.Runner._clean_pass

    def then_replace(self, *args, **kwargs):  # a copy put back in its place: another file under the same name
        out = clean_pass(self, *args, **kwargs)
        path = self.out_dir / "records.jsonl"
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data)
        return out

    monkeypatch.setattr(run.Runner, "_clean_pass", then_replace)
    with pytest.raises(GradconcealError, match="was removed or replaced while this run was writing"):
        evaluate(_spec({"source": "digits", "n": 4}, models=["mine"]), tmp_path / "out", quiet=True, plots=False,
                 models={"mine": nn.Sequential(nn.Flatten(), nn.Linear(64, 10))})


def test_a_training_folder_with_the_users_files_is_refused(tmp_path: Path) -> None:
    from gradconceal.folders import FolderLock

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(GradconcealError, match=r"holds files gradconceal did not write \(notes.txt\)"):
        FolderLock(tmp_path).acquire()
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_the_users_audit_json_in_the_output_folder_is_refused_before_the_audit(tmp_path: Path, capsys) -> None:
    """`gradconceal audit` writes audit.json into --out (the current folder by default): a file of the user's
    with that name stays as it was, and the refusal comes before the work; its own earlier audit is replaced,
    with the usual file mode (not the 0600 of a temporary file)."""
    import os
    import stat

    from gradconceal.cli import main
    from gradconceal.folders import default_file_mode

    (tmp_path / "audit.json").write_text("my notes on audits\n")
    assert main(["audit", "no-such-model", "--quick", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (f"error: refusing to replace {tmp_path / 'audit.json'}: it exists and "
                                               "is not an audit report gradconceal wrote; move it away or write elsewhere")
    assert (tmp_path / "audit.json").read_text() == "my notes on audits\n"
    (tmp_path / "audit.json").unlink()
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    args = ["--quiet", "audit", "small:cnn", "--data", "fashion-mnist", "--quick", "--n", "4", "--out", str(tmp_path)]
    for _ in range(2):  # the second run replaces the first one's audit.json
        assert main(args) == 0, capsys.readouterr().err
        saved = json.loads((tmp_path / "audit.json").read_text())
        assert saved["format"].startswith("gradconceal-audit/") and saved["model"] == "small:cnn"
        assert stat.S_IMODE(os.stat(tmp_path / "audit.json").st_mode) == default_file_mode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.json"]


def test_a_checkpoint_never_replaces_the_users_file(tmp_path: Path) -> None:
    """save_checkpoint (and so `train --export`) replaces an earlier gradconceal checkpoint, never another file:
    the user's own safetensors weights, a text file, a folder; `train` refuses before it trains."""
    from safetensors.torch import save_file

    from gradconceal.models.checkpoint import read_checkpoint, save_checkpoint
    from gradconceal.models.zoo import load_model
    from gradconceal.training.trainer import train

    model = load_model("small:cnn")
    theirs = tmp_path / "theirs.safetensors"
    save_file({"w": torch.ones(2)}, str(theirs))
    before = theirs.read_bytes()
    text = tmp_path / "notes.safetensors"
    text.write_text("mine")
    (tmp_path / "folder.safetensors").mkdir()
    for path, match in [(theirs, "it exists and is not a checkpoint gradconceal wrote"),
                        (text, "it exists and is not a checkpoint gradconceal wrote"),
                        (tmp_path / "folder.safetensors", "something other than a regular file is there")]:
        with pytest.raises(GradconcealError, match=match):
            save_checkpoint(model, path, architecture="small:cnn")
        with pytest.raises(GradconcealError, match=match):
            train("small:cnn", epochs=1, out_dir=tmp_path / "never", export=path)
    assert theirs.read_bytes() == before and text.read_text() == "mine"
    assert not (tmp_path / "never").exists(), "refused before the training folder was made"
    ours = save_checkpoint(model, tmp_path / "ours.safetensors", architecture="small:cnn")
    model.model_name = "second"
    save_checkpoint(model, ours, architecture="small:cnn")  # an earlier checkpoint of ours is replaced
    assert read_checkpoint(ours)[1]["model_name"] == "second"


def test_outputs_under_a_file_or_into_the_users_folder_are_refused_before_the_work(tmp_path: Path, capsys) -> None:
    """A file where an output folder goes, or the demo pointed at a folder of the user's: one line naming it,
    before any model is loaded or attacked (the demo prints nothing of its own first)."""
    from gradconceal.cli import main

    (tmp_path / "afile").write_text("x")
    for args, message in [
        (["audit", "small:cnn", "--quick", "--out", str(tmp_path / "afile")],
         f"cannot write an audit report to {tmp_path / 'afile' / 'audit.json'}: {tmp_path / 'afile'} is a file, not a folder"),
        (["audit", "small:cnn", "--quick", "--out", str(tmp_path / "afile" / "sub")],
         f"{tmp_path / 'afile'} is a file, not a folder"),
        (["train", "small:cnn", "--out", str(tmp_path / "run"), "--export", str(tmp_path / "afile" / "m.safetensors")],
         f"cannot write a checkpoint to {tmp_path / 'afile' / 'm.safetensors'}: {tmp_path / 'afile'} is a file"),
        (["demo", "--out", str(tmp_path / "afile")], f"output folder {tmp_path / 'afile'} is a file, not a folder"),
    ]:
        assert main(args) == 1, args
        captured = capsys.readouterr()
        assert captured.err.startswith("error: ") and message in captured.err, captured.err
        assert captured.out == "", args
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my report")
    assert main(["demo", "--out", str(mine)]) == 1
    captured = capsys.readouterr()
    assert "holds files gradconceal did not write (report.md)" in captured.err and captured.out == ""
    assert [p.name for p in mine.iterdir()] == ["report.md"] and not (tmp_path / "run").exists()


def test_an_os_error_the_cli_did_not_foresee_is_one_line(monkeypatch, capsys) -> None:
    """Disk full, no permission: the command ends with the system's message in one line, not a traceback."""
    from gradconceal.cli import main
    from gradconceal.cli import models as models_command

    def full(args):
        raise OSError(28, "No space left on device", "somewhere/records.jsonl")

    monkeypatch.setattr(models_command, "run", full)  # the parser is built per call, from the module's `run`
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err == "error: [Errno 28] No space left on device: 'somewhere/records.jsonl' (--debug shows where)\n"
    with pytest.raises(OSError):
        main(["--debug", "models"])


def test_rows_whose_gallery_files_would_collide_are_refused(tmp_path: Path) -> None:
    from gradconceal.evaluation.plan import plan_attacks
    from gradconceal.evaluation.spec import load_spec

    spec = load_spec({**_spec({"source": "digits"}, models=["mine", "mine_x"]),
                      "defenses": [{"name": "none", "label": "x_y"}, {"name": "gcm", "label": "y"}]},
                     extra_models=("mine", "mine_x"))
    with pytest.raises(GradconcealError, match=r"row labels 'mine/x_y' and 'mine_x/y' would share the file name"):
        plan_attacks(spec, (1, 8, 8))


@pytest.mark.parametrize("name", ["records.jsonl", "records.jsonl.gz", "results.json", "provenance.json"])
def test_special_files_in_an_owned_folder_never_hang_a_run(tmp_path: Path, name: str) -> None:
    import os
    import signal

    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER_FILE).write_text("")
    os.mkfifo(out / name)

    def timeout(*args: Any) -> None:
        raise AssertionError(f"a named pipe called {name} hung the run")

    signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    try:
        spec = _spec({"source": "digits", "n": 2}, models=["mine"])
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        if name.startswith("records"):
            with pytest.raises(GradconcealError, match=f"{name} is a named pipe, not a regular file"):
                evaluate(spec, out, quiet=True, plots=False, models={"mine": model})
        else:  # not ours to read: ignored, and the report replaces it
            evaluate(spec, out, quiet=True, plots=False, models={"mine": model})
    finally:
        signal.alarm(0)
