import io

from bench.progress import LineProgress, hms


def test_lines_count_up_with_an_eta():
    out = io.StringIO()
    p = LineProgress(3, "cell", stream=out)
    p.done("a", "ok")
    p.done("b")
    lines = out.getvalue().splitlines()
    assert lines[0] == "3 cells to run"
    assert lines[1].startswith("[1/3] cell a: ok | ") and "ETA" in lines[1]
    assert lines[2].startswith("[2/3] cell b | ")


def test_disabled_or_empty_prints_nothing():
    out = io.StringIO()
    LineProgress(3, "cell", enabled=False, stream=out).done("a")
    LineProgress(0, "victim", stream=out)
    assert out.getvalue() == ""


def test_hms():
    assert hms(59.6) == "1m00s" and hms(3725) == "1h02m" and hms(0) == "0m00s"


def test_fit_prints_one_line_per_epoch_in_line_mode_only(capsys):
    """Logs of long runs (--jobs > 1 or no terminal) get a line per training epoch naming the data
    set, seed, losses and seconds; bars and quiet modes print none (generated data)."""
    import torch.nn.functional as F

    from bench.train import fit
    from tests.generated import tiny_ctx

    def train(progress):
        ctx = tiny_ctx(n=64)
        ctx.progress = progress
        model = ctx.new_model()
        fit(model.parameters(), ctx, lambda x, y, _: {"ce": F.cross_entropy(model(x), y)},
            ctx.train.replace(epochs=2), desc="vanilla", modules=[model])
        return ctx, capsys.readouterr().err

    ctx, err = train("lines")
    lines = [line for line in err.splitlines() if "epoch" in line]
    assert len(lines) == 2
    assert lines[1].strip().startswith(f"{ctx.id_train.name}/s{ctx.seed} vanilla: epoch 2/2: ce ")
    assert lines[1].rstrip().endswith(" s)")
    for quiet in (False, True):
        assert "epoch" not in train(quiet)[1]
