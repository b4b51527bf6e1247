"""Figure D.1: a victim's t-SNE record (generated data) and the figure rendered from records."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import synthetic_records as S  # noqa: E402
from bench.embedding import tsne_record  # noqa: E402
from bench.figures import figure_d1  # noqa: E402
from defenses import get_defense  # noqa: E402
from tests.generated import generated_set, tiny_ctx  # noqa: E402


def test_tsne_record_embeds_both_sets_with_the_predicted_class():
    pytest.importorskip("sklearn")
    ctx = tiny_ctx(n=64)
    d = get_defense("vanilla")
    d.build(ctx)
    d.fit(ctx)
    d.eval()
    rec = tsne_record(d, generated_set(50, "gen-id", 5), generated_set(40, "gen-ood", 6), "cpu", n=45)
    assert len(rec["id"]) == 45 and len(rec["ood"]) == 40      # n caps each set
    assert all(len(p) == 3 and 0 <= p[2] < 10 for p in rec["id"] + rec["ood"])
    assert rec["id_set"] == "gen-id" and rec["ood_set"] == "gen-ood"
    edm = get_defense("edm")
    assert "skipped" in tsne_record(edm, None, None, "cpu")    # no single served network


def test_figure_d1_one_png_per_dataset_rows_per_defense(tmp_path):
    t = {"id": [[0.0, 1.0, 3], [1.0, 0.0, 4]], "ood": [[2.0, 2.0, 3]], "n": 2, "id_set": "mnist",
         "ood_set": "fashionmnist"}
    recs = [S.victim("mnist", d, 98.0, extra={"tsne": t}) for d in ("ini", "vanilla")]
    recs.append(S.victim("mnist", "mad", 98.0, extra={"tsne": {"skipped": "x"}}))
    assert figure_d1(recs, tmp_path) == ["figureD1_smallcnn_mnist.png"]
    assert (tmp_path / "figureD1_smallcnn_mnist.png").stat().st_size > 0
    assert figure_d1([S.victim("mnist", "vanilla", 98.0)], tmp_path) == []
