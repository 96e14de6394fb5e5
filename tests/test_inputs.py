"""Inputs that used to give wrong numbers or late failures without a word (docs/errors.md, rows 52 to 56).

Links in data folders (each image read once, loops not followed, no image with two labels); named pipes,
sockets and devices where a file is expected (refused, never waited on); files named as checkpoints that are
something else (named by what they are); attack settings that passed ``--check`` and failed after the model
loaded; spec files with a byte-order mark, JSON in a ``.toml`` file, UTF-16, empty or binary ones.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import signal
import socket
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from gradconceal.cli import main
from gradconceal.data import load_dataset, open_rgb
from gradconceal.files import describe_content
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.plan import plan_attacks
from gradconceal.evaluation.spec import load_spec, read_spec_file
from gradconceal.models.checkpoint import not_a_checkpoint, read_checkpoint, save_checkpoint
from gradconceal.models.zoo import load_model

TENCH, GOLDFISH = "n01440764", "n01443537"  # ImageNet classes 0 and 1


# -- helpers ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def no_hang(seconds: int = 30) -> Iterator[None]:
    """Fail the test instead of blocking forever (a named pipe opened for reading waits for a writer)."""

    def expire(signum: int, frame: Any) -> None:
        raise AssertionError(f"blocked for {seconds} s: a named pipe or device was read")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def cli(capsys, *argv: str) -> Tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clear_error(code: int, err: str, *needles: str) -> None:
    """Exit 1 with one 'error: ...' line holding every needle, and no traceback."""
    visible = err.rpartition("\r")[2]
    assert code == 1, (code, err)
    assert visible.startswith("error: ") and visible.count("\n") == 1, err
    for needle in needles:
        assert needle in visible, (needle, visible)
    assert "Traceback" not in err


def write_image(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def two_classes(tmp_path: Path) -> Path:
    """An ImageNet folder with one image of class 0 and one of class 1."""
    root = tmp_path / "val"
    write_image(root / TENCH / "a.JPEG", 10)
    write_image(root / GOLDFISH / "a.JPEG", 200)
    return root


# == links in data folders ================================================================================
@pytest.mark.parametrize("link, target", [
    (f"{TENCH}/loop", ".."),                # the issue's case: 2 images became 82, 40 with the wrong label
    (f"{TENCH}/loop", "."),
    (f"{TENCH}/deep/up", "../.."),
])
def test_a_symlink_loop_in_an_imagenet_folder_is_not_followed(two_classes: Path, caplog, link: str, target: str) -> None:
    path = two_classes / link
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    with caplog.at_level(logging.WARNING, logger="gradconceal.data.imagenet"):
        data = load_dataset(f"imagenet:{two_classes}")
    assert len(data) == 2 and data.targets == [0, 1]
    assert [f.name for f in data.files] == ["a.JPEG", "a.JPEG"]
    assert "a folder above it (a loop)" in caplog.text


@pytest.mark.parametrize("link, target", [
    (f"{TENCH}/other", f"../{GOLDFISH}"),            # a folder of another class inside a class folder
    (f"{TENCH}/c.JPEG", f"../{GOLDFISH}/a.JPEG"),    # an image of another class
    (GOLDFISH + "x", ""),                            # replaced below: the class folder itself is a link
])
def test_an_image_reached_from_two_class_folders_is_refused(two_classes: Path, link: str, target: str) -> None:
    if not target:  # class 1's folder is a link to class 0's: its images would carry both labels
        (two_classes / GOLDFISH / "a.JPEG").unlink()
        (two_classes / GOLDFISH).rmdir()
        os.symlink(TENCH, two_classes / GOLDFISH)
    else:
        os.symlink(target, two_classes / link)
    with pytest.raises(GradconcealError, match=r"is in two class folders through a symbolic link, n01440764 .*"
                                               r"one image cannot have two labels: remove the link"):
        load_dataset(f"imagenet:{two_classes}")


def test_a_link_to_an_image_of_the_same_class_is_read_once(two_classes: Path, caplog) -> None:
    os.symlink("a.JPEG", two_classes / TENCH / "b.JPEG")
    os.symlink(".", two_classes / TENCH / "again")  # the same folder twice: a loop
    with caplog.at_level(logging.WARNING, logger="gradconceal.data.imagenet"):
        data = load_dataset(f"imagenet:{two_classes}")
    assert data.targets == [0, 1]
    assert "already read for n01440764: counted once" in caplog.text


def test_links_to_images_outside_the_folder_and_hard_links_are_images(tmp_path: Path, two_classes: Path) -> None:
    elsewhere = write_image(tmp_path / "store" / "x.png", 50)
    os.symlink(elsewhere, two_classes / GOLDFISH / "b.png")          # an ImageNet subset made of links
    os.link(two_classes / TENCH / "a.JPEG", two_classes / GOLDFISH / "h.JPEG")  # a hard link: a file of its own
    linked_folder = tmp_path / "linked"
    write_image(linked_folder / "z.png", 90)
    os.symlink(linked_folder, two_classes / TENCH / "more")          # a linked folder of the same class
    data = load_dataset(f"imagenet:{two_classes}")
    assert sorted(zip(data.targets, (f.name for f in data.files))) == [
        (0, "a.JPEG"), (0, "z.png"), (1, "a.JPEG"), (1, "b.png"), (1, "h.JPEG")]


def test_a_flat_folder_reads_each_file_once_and_refuses_two_labels_for_one(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    write_image(flat / "a.png")
    os.symlink("a.png", flat / "b.png")
    labels = tmp_path / "labels.txt"
    labels.write_text(f"a.png {TENCH}\nb.png {TENCH}\n")
    assert load_dataset(f"imagenet:{flat}:{labels}").targets == [0]
    labels.write_text(f"a.png {TENCH}\nb.png {GOLDFISH}\n")
    with pytest.raises(GradconcealError, match=r"labels.txt labels b.png and a.png differently, but they are one file"):
        load_dataset(f"imagenet:{flat}:{labels}")
    labels.write_text(f"{TENCH}\n{GOLDFISH}\n")  # one synset per line
    with pytest.raises(GradconcealError, match=r"but they are one file"):
        load_dataset(f"imagenet:{flat}:{labels}")


def test_a_class_folder_that_cannot_be_listed_is_named(two_classes: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root lists every folder")
    locked = two_classes / TENCH / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        with pytest.raises(GradconcealError, match=r"cannot list folder .*locked of the data: Permission denied"):
            load_dataset(f"imagenet:{two_classes}")
    finally:
        locked.chmod(0o755)


# == named pipes, sockets, devices where a file is expected ==============================================
def test_a_named_pipe_called_b_jpeg_in_a_class_folder_is_refused_not_waited_on(two_classes: Path) -> None:
    os.mkfifo(two_classes / TENCH / "b.JPEG")
    with no_hang(), pytest.raises(GradconcealError, match=r"image .*n01440764/b.JPEG is a named pipe, not a regular "
                                                          r"file; only regular files are read as images: remove it"):
        load_dataset(f"imagenet:{two_classes}")


def test_a_socket_or_a_broken_link_with_an_image_name_is_refused(two_classes: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(two_classes / TENCH / "s.png"))
        with pytest.raises(GradconcealError, match=r"s.png is a socket, not a regular file"):
            load_dataset(f"imagenet:{two_classes}")
    finally:
        server.close()
        (two_classes / TENCH / "s.png").unlink()
    os.symlink("gone.JPEG", two_classes / GOLDFISH / "b.JPEG")
    with pytest.raises(GradconcealError, match=r"b.JPEG is a broken symbolic link \(to gone.JPEG\), not a regular file"):
        load_dataset(f"imagenet:{two_classes}")
    (two_classes / GOLDFISH / "b.JPEG").unlink()
    os.symlink("self.JPEG", two_classes / GOLDFISH / "self.JPEG")
    with pytest.raises(GradconcealError, match=r"self.JPEG is a symbolic link that leads back to itself \(a loop\)"):
        load_dataset(f"imagenet:{two_classes}")


@pytest.mark.parametrize("labels_form", ["one synset per line", "filename synset"])
def test_a_named_pipe_in_a_flat_folder_is_refused(tmp_path: Path, labels_form: str) -> None:
    flat = tmp_path / "flat"
    write_image(flat / "a.png")
    os.mkfifo(flat / "b.png")
    labels = tmp_path / "labels.txt"
    labels.write_text(f"{TENCH}\n{TENCH}\n" if labels_form == "one synset per line" else f"a.png {TENCH}\nb.png {TENCH}\n")
    with no_hang(), pytest.raises(GradconcealError, match=r"image .*flat/b.png is a named pipe, not a regular file"):
        load_dataset(f"imagenet:{flat}:{labels}")


def test_a_named_pipe_as_labels_file_image_or_idx_file_is_refused(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    write_image(flat / "a.png")
    pipe = tmp_path / "labels.txt"
    os.mkfifo(pipe)
    with no_hang():
        with pytest.raises(GradconcealError, match=r"labels file .*labels.txt is a named pipe, not a regular file"):
            load_dataset(f"imagenet:{flat}:{pipe}")
        os.mkfifo(tmp_path / "x.png")
        with pytest.raises(GradconcealError, match=r"image .*x.png is a named pipe, not a regular file"):
            open_rgb(tmp_path / "x.png")
        with pytest.raises(GradconcealError, match=r"image /dev/zero is a character device, not a regular file"):
            open_rgb("/dev/zero")
        fmnist = tmp_path / "fmnist"
        fmnist.mkdir()
        os.mkfifo(fmnist / "t10k-images-idx3-ubyte")
        (fmnist / "t10k-labels-idx1-ubyte").write_bytes(b"")
        with pytest.raises(GradconcealError, match=r"Fashion-MNIST file .*t10k-images-idx3-ubyte is a named pipe"):
            load_dataset(f"fashion-mnist:{fmnist}")


@pytest.mark.parametrize("name", ["spec.toml", "spec.json"])
def test_a_named_pipe_or_a_device_as_spec_file_is_refused(capsys, tmp_path: Path, name: str) -> None:
    pipe = tmp_path / name
    os.mkfifo(pipe)
    with no_hang():
        code, _, err = cli(capsys, "evaluate", str(pipe), "--check")
        assert_clear_error(code, err, f"spec file {pipe} is a named pipe, not a regular file; give a .toml or .json")
        with pytest.raises(GradconcealError, match=r"spec file /dev/zero is a character device, not a regular file"):
            read_spec_file(Path("/dev/zero"))


def test_a_named_pipe_as_checkpoint_is_refused(tmp_path: Path) -> None:
    pipe = tmp_path / "model.safetensors"
    os.mkfifo(pipe)
    with no_hang():
        with pytest.raises(GradconcealError, match=r"checkpoint .*model.safetensors is a named pipe, not a regular file"):
            read_checkpoint(pipe)
        with pytest.raises(GradconcealError, match=r"checkpoint /dev/zero is a character device"):
            not_a_checkpoint("/dev/zero")
        with pytest.raises(GradconcealError):  # the model-name check refuses it; it is never opened
            load_model(str(pipe))


# == files named as checkpoints that are something else ==================================================
HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>...</body></html>\n"


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoints")
    return save_checkpoint(load_model("small:cnn"), folder / "good.safetensors", architecture="small:cnn")


def _foreign_files(folder: Path, good: Path) -> Dict[str, Path]:
    raw = good.read_bytes()
    contents = {
        "page.safetensors": HTML,
        "empty.safetensors": b"",
        "truncated.safetensors": raw[: len(raw) // 2],
        "cut-header.safetensors": raw[:40],
        "notes.safetensors": b"not a model\n",
        "config.safetensors": json.dumps({"architecture": "small:cnn", "lr": 0.1}).encode(),
        "pointer.safetensors": b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 971112\n",
        "packed.safetensors": gzip.compress(raw, mtime=0),
    }
    paths = {}
    for name, content in contents.items():
        paths[name] = folder / name
        paths[name].write_bytes(content)
    torch.save(load_model("small:cnn").net.state_dict(), folder / "saved.safetensors")
    paths["saved.safetensors"] = folder / "saved.safetensors"
    with zipfile.ZipFile(folder / "archive.safetensors", "w") as archive:
        archive.writestr("README.txt", "weights to follow")
    paths["archive.safetensors"] = folder / "archive.safetensors"
    return paths


@pytest.mark.parametrize("name, message", [
    ("page.safetensors", "not a checkpoint; it starts like an HTML page (a failed download?): download it again"),
    ("empty.safetensors", "it is empty (0 bytes): save or download it again"),
    ("truncated.safetensors", "it is truncated: its header describes 971112 bytes, the file has 485556: copy or "
                              "download it again"),
    ("cut-header.safetensors", "its header claims 2208 bytes, but the file has 32 after the header's length "
                               "(truncated, or not a safetensors file)"),
    ("notes.safetensors", "not a checkpoint; it holds text ('not a model'): give the weights file itself"),
    ("config.safetensors", "not a checkpoint; it holds JSON text: give the weights file itself"),
    ("pointer.safetensors", "not a checkpoint; it is a Git LFS pointer, not the file it points to: run 'git lfs pull'"),
    ("packed.safetensors", "not a checkpoint; it is gzip-compressed: decompress it first (gunzip)"),
    ("saved.safetensors", "it is a torch.save file, not a safetensors file: name it .pt"),
    ("archive.safetensors", "not a checkpoint; it is a zip archive: give the weights file itself"),
])
def test_a_checkpoint_that_is_something_else_is_named_by_what_it_is(tmp_path: Path, good_checkpoint: Path,
                                                                    name: str, message: str) -> None:
    path = _foreign_files(tmp_path, good_checkpoint)[name]
    sizes = {"truncated.safetensors", "cut-header.safetensors"}
    if name in sizes and good_checkpoint.stat().st_size != 971112:
        message = message.split(":")[0]  # the sizes depend on the network; the words do not
    with pytest.raises(GradconcealError) as caught:
        load_model(str(path))
    assert str(caught.value).startswith(f"cannot read checkpoint {path}: ")
    assert message in str(caught.value)
    assert "could run code" not in str(caught.value)


def test_the_issue_html_page_saved_as_checkpoint_leaves_no_records(capsys, tmp_path: Path) -> None:
    page = tmp_path / "resnet.safetensors"
    page.write_bytes(HTML)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "evaluate", "--model", str(page), "--data", "digits", "--n", "2", "--attacks", "paper",
                       "--no-audit", "--device", "cpu", "--out", str(out))
    assert_clear_error(code, err, f"cannot read checkpoint {page}: not a checkpoint; it starts like an HTML page")
    assert not (out / "records.jsonl").exists()
    assert not any((out / name).exists() for name in ("report.md", "results.json", "results.csv"))


@pytest.mark.parametrize("name, content, message", [
    ("page.pth", HTML, "not a checkpoint; it starts like an HTML page (a failed download?): download it again"),
    ("empty.pt", b"", "it is empty (0 bytes): save or download it again"),
    ("notes.pth", b"hello", "not a checkpoint; it holds text ('hello'): give the weights file itself"),
    ("config.pth", b'{"lr": 0.1}', "not a checkpoint; it holds JSON text: give the weights file itself"),
    ("archive.pth", None, "not a checkpoint; it is a zip archive without a PyTorch checkpoint in it (it holds a.txt)"),
    ("safetensors.pth", "good", "it is a safetensors file, not a torch.save file: name it .safetensors"),
])
def test_a_torch_weights_file_that_is_something_else_is_named(tmp_path: Path, good_checkpoint: Path, name: str,
                                                              content: Any, message: str) -> None:
    path = tmp_path / name
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("a.txt", "not weights")
    else:
        path.write_bytes(good_checkpoint.read_bytes() if content == "good" else content)
    assert not_a_checkpoint(path) == message


def test_real_torch_weights_files_are_not_called_something_else(tmp_path: Path) -> None:
    state = load_model("small:cnn").net.state_dict()
    torch.save(state, tmp_path / "new.pth")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert not_a_checkpoint(tmp_path / "new.pth") is None
    assert not_a_checkpoint(tmp_path / "legacy.pt") is None


def test_the_issue_html_page_saved_as_pth_is_not_called_a_pickle(tmp_path: Path) -> None:
    page = tmp_path / "resnet.pth"
    page.write_bytes(HTML)
    with pytest.raises(GradconcealError, match=r"not a checkpoint; it starts like an HTML page"):
        load_model("small:cnn", weights=str(page))


# == attack settings that passed --check and failed after the model loaded ===============================
EOT_TABLE = {"attack": "pgd", "view": "eot", "steps": 2}
BASE_SPEC: Dict[str, Any] = {"models": ["small:cnn"], "defenses": ["none", "resize-pad"],
                             "data": {"source": "digits", "n": 2}, "attacks": []}


def _with_eot_samples(where: str, value: Any) -> Dict[str, Any]:
    spec = json.loads(json.dumps(BASE_SPEC))
    if where == "explicit":
        spec["attacks"] = [{**EOT_TABLE, "eot_samples": value}]
    elif where == "preset override":
        spec["attacks"] = [{"preset": "adaptive", "overrides": {"BPDA+EOT PGD-Linf": {"eot_samples": value}}}]
    else:
        spec["sweep"] = {"linf": ["8/255"], "views": ["eot"], "settings": {"eot_samples": value}}
    return spec


@pytest.mark.parametrize("where", ["explicit", "preset override", "sweep"])
@pytest.mark.parametrize("value, message", [
    ("x", "eot_samples must be an integer, got 'x'"),
    (0, "eot_samples must be an integer >= 1, got 0"),
    (-3, "eot_samples must be an integer >= 1, got -3"),
    (2.7, "eot_samples must be an integer, got 2.7"),   # used to run as 2
    (True, "eot_samples must be an integer, got True"),
])
def test_eot_samples_is_checked_by_check_before_any_model_loads(capsys, tmp_path: Path, monkeypatch, where: str,
                                                                 value: Any, message: str) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_with_eot_samples(where, value)))
    code, _, err = cli(capsys, "evaluate", str(spec_file), "--check")
    assert_clear_error(code, err, message)

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded before the attack settings were checked")

    monkeypatch.setattr("gradconceal.models.zoo.load_model", no_model)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "evaluate", str(spec_file), "--out", str(out), "--no-audit")
    assert_clear_error(code, err, message)
    assert not (out / "records.jsonl").exists()


def test_a_whole_eot_samples_still_runs_as_given() -> None:
    plans = plan_attacks(load_spec(_with_eot_samples("explicit", 3)), (1, 8, 8))
    assert [plan.eot_samples for plan in plans] == [3]


@pytest.mark.parametrize("attacks, sweep, message", [
    ([{"attack": "pgd", "view": "transfer", "surrogate": "resnet"}], None,
     "attacks[0] (TRANSFER-PGD): 'surrogate' cannot be set in a spec"),
    ([{"preset": "adaptive", "overrides": {"BPDA+EOT PGD-Linf": {"surrogate": 1}}}], None,
     "(adaptive: BPDA+EOT PGD-Linf): 'surrogate' cannot be set in a spec"),
    ([{"preset": "paper", "overrides": {"PGD-Linf": {"attack": "fgsm"}}}], None,
     "(paper: PGD-Linf): 'attack' cannot be a setting of attack 'pgd'"),
    ([], {"linf": ["8/255"], "views": ["transfer"], "settings": {"attack": "fgsm"}},
     "'attack' cannot be a setting of attack 'pgd'"),
    ([{**EOT_TABLE, "eot_sample": 4}], None,
     "attacks[0] (EOT-PGD): unknown setting 'eot_sample' (did you mean 'eot_samples'?)"),
    ([{"attack": "pgd", "view": "plain", "eot_samples": 4}], None, "eot_samples needs view 'eot' or 'bpda+eot'"),
])
def test_every_key_of_every_attack_table_is_checked(capsys, tmp_path: Path, attacks: List[Any], sweep: Any,
                                                    message: str) -> None:
    spec = {**BASE_SPEC, "attacks": attacks, **({"sweep": sweep} if sweep else {})}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    code, _, err = cli(capsys, "evaluate", str(spec_file), "--check")  # a TypeError traceback before
    assert_clear_error(code, err, message)


def test_setting_names_that_are_not_strings_are_refused() -> None:
    spec = {**BASE_SPEC, "attacks": [{"attack": "pgd", 1: 2}]}
    with pytest.raises(GradconcealError, match=r"attacks\[0\] \(PGD\): setting names must be strings, got 1"):
        plan_attacks(load_spec(spec), (1, 8, 8))


# == spec files: byte-order marks, JSON in .toml, UTF-16, empty, binary ==================================
SPEC_TOML = 'models = ["small:cnn"]\ndata = "digits"\nattacks = ["paper"]\n'
SPEC = {"models": ["small:cnn"], "data": "digits", "attacks": ["paper"]}


@pytest.mark.parametrize("name, content", [
    ("spec.toml", b"\xef\xbb\xbf" + SPEC_TOML.encode()),
    ("spec.json", b"\xef\xbb\xbf" + json.dumps(SPEC).encode()),
])
def test_a_spec_with_a_utf8_byte_order_mark_is_read(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert read_spec_file(path) == SPEC


@pytest.mark.parametrize("name, content, message", [
    ("spec.toml", json.dumps(SPEC).encode(), "spec file {path} holds JSON; name it .json"),
    ("spec.json", SPEC_TOML.encode(), "spec file {path} holds TOML; name it .toml"),
    ("spec.toml", SPEC_TOML.encode("utf-16"), "cannot read spec file {path}: 'utf-8' codec can't decode byte 0xff in "
                                              "position 0: invalid start byte; it is UTF-16 text: save it as UTF-8"),
    ("spec.toml", SPEC_TOML.encode("utf-16-le"), "cannot read spec file {path}: it is UTF-16 text: save it as UTF-8"),
    ("spec.json", json.dumps(SPEC).encode("utf-32"), "; it is UTF-32 text: save it as UTF-8"),
    ("spec.toml", b"", "spec file {path} is empty; a spec names models, data and attacks"),
    ("spec.toml", b"\n  \n", "spec file {path} is empty"),
    ("spec.toml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "spec file {path} is not a TOML or JSON spec; it is a binary file"),
    ("spec.toml", b"models = 1\x00\x00\x00", "spec file {path} is not a TOML or JSON spec; it is a binary file"),
    ("spec.toml", gzip.compress(SPEC_TOML.encode(), mtime=0), "spec file {path} is not a TOML or JSON spec; it is gzip-compressed"),
    ("spec.json", HTML, "spec file {path} is not a TOML or JSON spec; it starts like an HTML page (a failed download?)"),
    ("spec.toml", 'note = "caf\xe9"\n'.encode("latin-1"), "cannot read spec file {path}: 'utf-8' codec can't decode byte "
                                                          "0xe9 in position 11: invalid continuation byte; save it as UTF-8"),
])
def test_a_spec_file_that_cannot_be_read_says_why(capsys, tmp_path: Path, name: str, content: bytes,
                                                  message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, _, err = cli(capsys, "evaluate", str(path), "--check")  # 'Invalid statement (line 1, column 1)' before
    assert_clear_error(code, err, message.format(path=path))


def test_describe_content_names_common_mix_ups() -> None:
    assert describe_content(b"") == "it is empty (0 bytes)"
    assert describe_content(b"\x00\x01\x02\x03") is None
    assert describe_content(b"plain words", "do this") == "it holds text ('plain words'): do this"
    assert describe_content(HTML, "do this").endswith("download it again")
    assert describe_content("données".encode("utf-16-le")) == "it is UTF-16 text"
    assert describe_content(b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>").endswith(
        "(a failed download's error page?): download it again")
