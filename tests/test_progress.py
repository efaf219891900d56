"""The progress bar: in-place redraws on a terminal, a line per 10 % in a log, nothing when disabled."""

import io

from fused_optim.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_gets_a_line_per_tenth_and_a_final_line():
    out = io.StringIO()
    for _ in Progress(range(100), "work", stream=out):
        pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # the start, 10 %, 20 %, ..., 90 %, then the final state
    assert lines[0].startswith("work [---") and "1/100" in lines[0]
    assert lines[1].startswith("work [##") and "10/100" in lines[1]
    assert "100/100" in lines[-1] and "-" not in lines[-1].split("]")[0]


def test_terminal_redraws_one_line_with_the_note():
    out = Terminal()
    with Progress(total=3, desc="train", stream=out) as bar:
        for i in range(3):
            bar.update(note=f"loss {i}")
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "3/3" in text and "loss 2" in text


def test_unknown_total_counts():
    out = io.StringIO()
    for _ in Progress(iter(range(5)), "scan", stream=out):
        pass
    assert out.getvalue().strip().startswith("scan 5 ")


def test_disabled_writes_nothing():
    out = io.StringIO()
    for _ in Progress(range(10), stream=out, enabled=False):
        pass
    assert out.getvalue() == ""
