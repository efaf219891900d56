"""python -m fused_optim: the demo trains for real and agrees with torch.optim; bad arguments are refused."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from fused_optim.__main__ import main


def test_demo_trains_beside_torch(capsys, tmp_path):
    png = tmp_path / "demo.png"
    assert main(["demo", "--steps", "40", "--device", "cpu", "--png", str(png)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "training [####" in captured.err  # the progress bar, on stderr
    rows = dict(re.findall(r"^(fused_optim\.AdamW|torch\.optim\.AdamW)\s+([\d.]+)\s", out, re.M))
    assert set(rows) == {"fused_optim.AdamW", "torch.optim.AdamW"}
    assert float(rows["fused_optim.AdamW"]) < 2.0  # ln(10) = 2.30 is chance level: it learned something
    assert abs(float(rows["fused_optim.AdamW"]) - float(rows["torch.optim.AdamW"])) < 0.05
    assert "speed-up" in out
    # the loss curves side by side: the runs start from the same weights and see the same batches
    curve = re.findall(r"^\s+(\d+)\s+([\d.e+-]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert len(curve) == 6 and curve[0][0] == "1" and curve[-1][0] == "40"
    assert curve[0][2] == curve[0][3]


def test_demo_without_a_picture(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--steps", "5", "--device", "cpu", "--png", "", "--quiet"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == ""


def test_info(capsys):
    assert main(["info"]) == 0
    assert "cpu_isa:" in capsys.readouterr().out


def test_bad_steps_is_an_error():
    with pytest.raises(SystemExit) as e:
        main(["demo", "--steps", "0"])
    assert e.value.code == 2


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "fused_optim", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout


def test_schedule_prints_the_table(capsys):
    """The table's values are HF's warm-up + cosine formula at the printed steps."""
    import math

    assert main(["schedule", "cosine", "--steps", "100", "--warmup", "10", "--lr", "0.5", "--rows", "6"]) == 0
    rows = re.findall(r"^\s*(\d+)\s+([\d.e+-]+)$", capsys.readouterr().out, re.M)
    assert len(rows) == 6 and rows[0][0] == "0" and rows[-1][0] == "99"
    for step, lr in rows:
        s = int(step)
        expected = s / 10 if s < 10 else 0.5 * (1 + math.cos(math.pi * (s - 10) / 90))
        assert abs(float(lr) - 0.5 * expected) < 1e-5


def test_schedule_errors():
    with pytest.raises(SystemExit, match="key=value"):
        main(["schedule", "cosine", "--kw", "num_cycles"])
    with pytest.raises(SystemExit, match="schedule nonsense"):
        main(["schedule", "nonsense"])


def test_schedule_png(tmp_path, capsys):
    path = tmp_path / "cosine.png"
    assert main(["schedule", "cosine", "--steps", "50", "--warmup", "5", "--png", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert "wrote" in capsys.readouterr().out


def test_demo_without_matplotlib_says_so(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["demo", "--steps", "5", "--device", "cpu", "--png", str(tmp_path / "d.png"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "no picture" in out and "pip install matplotlib" in out
    assert not (tmp_path / "d.png").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["schedule", "cosine", "--rows", "1"], "--rows: must be at least 2, got 1"),
        (["schedule", "cosine", "--rows", "-1"], "--rows: must be at least 2, got -1"),
        (["schedule", "cosine", "--lr", "nan"], "--lr: must be a positive finite number, got nan"),
        (["demo", "--lr", "-1"], "--lr: must be a positive finite number, got -1"),
        (["demo", "--lr", "x"], "--lr: expected a number, got 'x'"),
        (["bench", "--warmup", "-5"], "--warmup: must be at least 0, got -5"),
        (["schedule", "cosine", "--warmup", "-1"], "--warmup: must be at least 0, got -1"),
        (["find-lr", "--steps", "1"], "--steps: must be at least 2, got 1"),
    ],
    ids=str,
)
def test_bad_option_values_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", [["schedule", "cosine"], ["find-lr"], ["bench"], ["demo"]], ids=lambda c: c[0])
def test_a_png_in_a_missing_folder_is_a_usage_error_before_the_run(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--png", str(tmp_path / "missing" / "x.png")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--png: cannot write" in err and "no such folder" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["schedule", "constant", "--warmup", "5"], "takes no warm-up (as HF's); use constant_with_warmup"),
        (["schedule", "cosine", "--kw", "last_epoch=5"], "schedule cosine: \"param 'initial_lr' is not specified"),
    ],
)
def test_schedule_errors_are_messages(argv, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        main(argv)


def test_profile_of_split_masters_for_fp16_says_why(capsys):
    code = main(["profile", "--dtype", "float16", "--master-weights", "split", "--steps", "1", "--no-progress"])
    assert code == 1
    assert "split" in capsys.readouterr().err
