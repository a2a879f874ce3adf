"""The experiments refuse a bad option like the CLI does: exit 2, one line on stderr, before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from advimage.cli import main

# name -> (argv after "experiment", what the folder --out holds beforehand, the refusal's words).
# "{images}": a labelled set of two 32 px PNGs; "{bare}": one unlabelled PNG; "{model}": the tiny test model.
REFUSALS = {
    "squeezing unknown attack": (["squeezing", "{images}", "--model", "{model}", "--attack", "nope"], None,
                                 "unknown attack 'nope'; valid attacks: "),
    "squeezing calibration": (["squeezing", "{images}", "--model", "{model}", "--calibration", "-1"], None,
                              "--calibration must be >= 0 and --fpr in [0, 1)"),
    "squeezing fpr": (["squeezing", "{images}", "--model", "{model}", "--fpr", "1"], None,
                      "--calibration must be >= 0 and --fpr in [0, 1)"),
    "squeezing defenses": (["squeezing", "{images}", "--model", "{model}", "--defenses", "bits:0"], None,
                           "bad --model/--defenses: "),
    "squeezing adaptive params": (["squeezing", "{images}", "--model", "{model}", "--adaptive-params", "nope=1"],
                                  None, "bad --adaptive-attack/--adaptive-params: "),
    "jpeg-defense unknown attack": (["jpeg-defense", "{images}", "--model", "{model}", "--attack", "nope"], None,
                                    "unknown attack 'nope'; valid attacks: "),
    "jpeg-table unknown attack": (["jpeg-table", "{images}", "--model", "{model}", "--attack", "nope"], None,
                                  "unknown attack 'nope'; valid attacks: "),
    "jpeg-table unknown baseline": (["jpeg-table", "{images}", "--model", "{model}", "--baseline", "nope"], None,
                                    "unknown attack 'nope'; valid attacks: "),
    "stego-table test fraction": (["stego-table", "{images}", "--model", "{model}", "--test-fraction", "1.5"],
                                  None, "--test-fraction must be in (0, 1)"),
    "stego-table dfs": (["stego-table", "{images}", "--model", "{model}", "--dfs", "0"], None,
                        "--dfs must be >= 1"),
    "stego-table adaptive without srnet": (["stego-table", "{images}", "--model", "{model}", "--adaptive", "srnet"],
                                           None, "--adaptive srnet needs an SRNet: --srnet-epochs N"),
    "stego-table no labels": (["stego-table", "{bare}", "--model", "{model}"], None, "no labelled images found"),
    "stego-table run without --resume": (["stego-table", "{images}", "--model", "{model}"], "settings",
                                         "already holds a run: pass --resume to continue it"),
    "stego-table other options": (["stego-table", "{images}", "--model", "{model}", "--resume"], "settings",
                                  "was made with other options ("),
    "stego-table older run": (["stego-table", "{images}", "--model", "{model}"], "crops",
                              "holds pairs without settings.json (an older run): choose another --out"),
    "scaling-fig92 unknown model": (["scaling-fig92", "{images}", "--models", "nope"], None, "nope"),
    "transfer-table steps": (["transfer-table", "{images}", "--model", "{model}", "--steps", "50", "--quantize",
                              "lattice-int"], None, "steps must exceed the quantizer's 50 gradient"),
    "transfer-table attacks without --resume": (["transfer-table", "{images}", "--model", "{model}"], "attacks",
                                                "already holds attacks: pass --resume to continue"),
    "transfer-table legacy settings": (["transfer-table", "{images}", "--model", "{model}", "--resume"], "legacy",
                                       "holds attacks of other-model (steps 7, seed 0, quantizer smart)"),
    "ensemble-table unknown config": (["ensemble-table", "{images}", "--model", "{model}", "--configs", "nope"],
                                      None, "unknown config 'nope'; valid: "),
    "random-resize unknown config": (["random-resize", "{images}", "--model", "{model}", "--configs", "nope"],
                                     None, "unknown config 'nope'; valid: "),
}


def _png(path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


def _held(out, kind: str | None) -> None:
    """What ``--out`` holds before the refused call."""
    if kind is None:
        return
    out.mkdir(parents=True)
    if kind == "settings":
        (out / "settings.json").write_text(json.dumps({"model": "other-model"}))
    elif kind == "crops":
        (out / "crops.csv").write_text("photo,crop\n")
    elif kind == "attacks":
        (out / "attacks" / "nearest").mkdir(parents=True)
        (out / "attacks" / "nearest" / "rows.jsonl").write_text("{}\n")
    elif kind == "legacy":
        (out / "settings.json").write_text(json.dumps({"model": "other-model", "steps": 7, "seed": 0}))


@pytest.mark.parametrize("name", list(REFUSALS))
def test_an_experiment_refuses_a_bad_option_with_status_2(name, tmp_path, tiny_registered, capsys):
    argv, held, words = REFUSALS[name]
    images = tmp_path / "set"
    images.mkdir()
    for i in range(2):
        _png(images / f"img{i}.png")
    (images / "labels.csv").write_text("filename,label\nimg0.png,0\nimg1.png,1\n")
    bare = tmp_path / "bare"
    bare.mkdir()
    _png(bare / "img.png")
    out = tmp_path / "out"
    _held(out, held)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    full = ["experiment", *(a.format(images=images, bare=bare, model=tiny_registered) for a in argv),
            "--out", str(out), "--device", "cpu", "--quiet"]
    with pytest.raises(SystemExit) as e:
        main(full)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.startswith("advimage: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert words in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("name", ["jpeg-defense", "jpeg-table"])
def test_a_parsed_zero_steps_is_refused_with_status_2(name, tmp_path, capsys):
    """``--steps 0`` stops at the parser; a namespace built in Python reaches the entry point's own check."""
    from advimage.cli import build_parser

    args = build_parser().parse_args(["experiment", name, str(tmp_path), "--out", str(tmp_path / "out")])
    args.steps = 0
    with pytest.raises(SystemExit) as e:
        args.experiment_main(args)
    assert e.value.code == 2 and capsys.readouterr().err == "advimage: --steps must be >= 1\n"
    assert not (tmp_path / "out").exists()
