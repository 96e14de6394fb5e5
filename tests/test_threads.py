"""``--threads``: one meaning in train, evaluate, audit and demo; clear errors; the count torch uses while the
command works; and the 'auto' policy's choice as a function of cores, load and local processes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, List

import pytest
import torch

import gradconceal.data
import gradconceal.evaluation.api
import gradconceal.models.zoo
import gradconceal.training
from gradconceal import threads
from gradconceal.cli import build_parser, main
from gradconceal.errors import GradconcealError

COMMANDS = {
    "train": ["train", "small:cnn"],
    "evaluate": ["evaluate", "--model", "fmnist-cnn", "--data", "fashion-mnist", "--n", "4"],
    "audit": ["audit", "fmnist-cnn"],
    "demo": ["demo"],
}
# The first thing each command does after applying --threads that is worth stopping at.
WORK = {
    "train": (gradconceal.training, "train"),
    "evaluate": (gradconceal.evaluation.api, "evaluate"),
    "audit": (gradconceal.models.zoo, "load_model"),
    "demo": (gradconceal.data, "load_dataset"),
}


@pytest.fixture(autouse=True)
def keep_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """Each command's work replaced by a stand-in that notes torch's thread count, then stops the command."""
    counts: List[int] = []

    def stand_in(*args: object, **kwargs: object) -> None:
        counts.append(torch.get_num_threads())
        raise GradconcealError("stopped by the test")

    for module, name in WORK.values():
        monkeypatch.setattr(module, name, stand_in)
    return counts


def _run(command: str, *extra: str, tmp_path: Path) -> int:
    argv = list(COMMANDS[command]) + list(extra)
    if command != "evaluate" or "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    return main(argv)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("count", [1, 2, 3])
def test_the_count_given_is_what_torch_uses_during_the_command(command: str, count: int, seen: List[int],
                                                               tmp_path: Path) -> None:
    torch.set_num_threads(1 if count != 1 else 2)  # so that the command has to change it
    assert _run(command, "--threads", str(count), tmp_path=tmp_path) == 1  # the stand-in's error
    assert seen == [count]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_without_the_flag_the_default_is_one_thread(command: str, seen: List[int], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    _run(command, tmp_path=tmp_path)
    assert seen == [threads.DEFAULT_THREADS] == [1]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_without_the_flag_omp_num_threads_is_left_as_the_user_set_it(command: str, seen: List[int], tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    _run(command, tmp_path=tmp_path)
    assert seen == [3]
    seen.clear()
    _run(command, "--threads", "2", tmp_path=tmp_path)  # the flag wins over the environment
    assert seen == [2]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("cores, busy, expected", [(2, 0.0, 2), (2, 2.0, 1), (8, 3.0, 5)])
def test_auto_uses_the_free_cores_during_the_command(command: str, cores: int, busy: float, expected: int,
                                                     seen: List[int], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    _run(command, "--threads", "auto", tmp_path=tmp_path)
    assert seen == [expected]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("value", ["0", "-1", "1.5", "two", "", "2 threads"])
def test_bad_values_are_usage_errors_that_name_the_flag(command: str, value: str, seen: List[int],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(COMMANDS[command] + ["--threads", value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --threads: must be an integer >= 1 or 'auto', got {value!r}" in err
    assert seen == []  # nothing ran


def test_every_command_has_the_same_flag() -> None:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in COMMANDS:
        flag = next(a for a in subparsers.choices[command]._actions if "--threads" in a.option_strings)
        assert (flag.help, flag.default, flag.metavar, flag.type) == (
            threads.THREADS_HELP, None, "N|auto", threads.parse_threads)


@pytest.mark.parametrize("value", [0, -2, True, 1.0, "0", "x", None.__class__])
def test_the_library_function_refuses_what_the_flag_refuses(value: object) -> None:
    with pytest.raises(GradconcealError, match=r"--threads must be an integer >= 1 or 'auto', got"):
        threads.apply_threads(value)  # type: ignore[arg-type]


def test_apply_returns_the_count_it_set(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    assert threads.apply_threads(3) == 3 and threads.apply_threads("AUTO ") >= 1 and calls[0] == 3


@pytest.mark.parametrize(
    "cores, busy, processes, expected",
    [
        (2, 0.0, 1, 2),   # an idle 2-core machine: both cores
        (2, 0.4, 1, 2),   # a little background noise does not cost a core
        (2, 0.6, 1, 1),   # more than half a core busy: leave it
        (2, 1.0, 1, 1),   # one busy process
        (2, 2.0, 1, 1),   # two busy loops: one thread, never zero
        (2, 9.0, 1, 1),   # overloaded: still one
        (16, 3.0, 1, 13),
        (16, 0.0, 4, 4),  # four torchrun processes share the cores
        (16, 0.0, 64, 1),
        (4, -1.0, 1, 4),  # a nonsense negative load counts as none, never more threads than cores
        (1, 0.0, 1, 1),
    ],
)
def test_auto_policy_by_cores_load_and_processes(cores: int, busy: float, processes: int, expected: int) -> None:
    assert threads.auto_threads(cores, busy, processes) == expected


def test_auto_reads_local_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.resolve_threads("auto") == 4


def test_busy_cores_sees_a_load_the_average_has_not_caught_up_with(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    loadavg = tmp_path / "loadavg"
    monkeypatch.setattr(threads, "LOADAVG_FILE", str(loadavg))
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    loadavg.write_text("0.30 0.20 0.10 3/120 999\n")  # two busy loops just started, and this process
    assert threads.busy_cores() == 2.0
    loadavg.write_text("0.30 0.20 0.10 1/120 999\n")  # only this process runs: the average stands
    assert threads.busy_cores() == pytest.approx(0.3)
    loadavg.write_text("garbled")
    assert threads.busy_cores() == pytest.approx(0.3)


def test_available_cores_respects_a_cgroup_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(threads, "CPU_MAX_FILE", str(cpu_max))
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)))
    cpu_max.write_text("150000 100000\n")
    assert threads.available_cores() == 2
    cpu_max.write_text("max 100000\n")
    assert threads.available_cores() == 8
    cpu_max.unlink()
    assert threads.available_cores() == 8
