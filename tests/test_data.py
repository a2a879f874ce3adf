import re
from pathlib import Path

import pytest
from PIL import Image

from advimage.data import DataError, ImageItem, LabelError, check_labels, discover


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    return path


def test_labels_csv_with_indices_and_wnids(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_text("filename,label,name\na.png,3,x\nb.png,n01440764,tench\n")
    items = discover([tmp_path])
    assert [(i.path.name, i.label) for i in items] == [("a.png", 3), ("b.png", 0)]


def test_imagefolder_of_wordnet_ids(tmp_path):
    _img(tmp_path / "n01443537" / "g1.jpg")
    _img(tmp_path / "n01440764" / "t1.png")
    items = discover([tmp_path])
    assert [(i.path.name, i.label) for i in items] == [("t1.png", 0), ("g1.jpg", 1)]


def test_wnid_prefixed_files_and_lone_files(tmp_path):
    a = _img(tmp_path / "n01484850_great_white_shark.JPEG")
    b = _img(tmp_path / "holiday.png")
    assert [(i.path.name, i.label) for i in discover([tmp_path])] == [("holiday.png", None), (a.name, 2)]
    assert discover([b])[0].label is None


def test_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        discover([tmp_path / "nope"])
    with pytest.raises(DataError, match="no images found"):
        discover([tmp_path])
    (tmp_path / "labels.csv").write_text("file,class\n")
    with pytest.raises(DataError, match="filename"):
        discover([tmp_path])
    (tmp_path / "labels.csv").write_text("filename,label\na.png,cat\n")
    with pytest.raises(DataError, match="neither a class index"):
        discover([tmp_path])


def test_labels_outside_the_model_classes_name_their_line(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        _img(tmp_path / name)
    (tmp_path / "labels.csv").write_text("filename,label\na.png,3\nb.png,5000\nc.png,-1\nd.png,n01530575\n")
    items = discover([tmp_path])
    check_labels(items[:1], 10)
    csv_path = re.escape(str(tmp_path / "labels.csv"))
    for item, line, text in ((items[1], 3, "5000"), (items[2], 4, "-1"), (items[3], 5, r"n01530575 \(class 10\)")):
        with pytest.raises(LabelError, match=rf"^{csv_path}:{line}: label {text} is outside the model's 10 classes"
                                             r" \[0, 10\)$"):
            check_labels([item], 10)
    check_labels([items[1], items[3]], 10000, "big")
    with pytest.raises(LabelError, match="label 5000 is outside model big's 1000 classes"):
        check_labels(items, 1000, "big")


def test_wordnet_ids_in_names_are_checked_too(tmp_path):
    folder = _img(tmp_path / "tree" / "n01530575" / "x.png").parent
    named = _img(tmp_path / "n01530575_y.png")
    with pytest.raises(LabelError, match=rf"^{re.escape(str(folder))}: label n01530575 \(class 10\) is outside"):
        check_labels(discover([tmp_path / "tree"]), 10)
    with pytest.raises(LabelError, match=rf"^{re.escape(str(named))}: label n01530575 \(class 10\)"):
        check_labels(discover([named]), 10)
    check_labels(discover([named]), 1000)
    with pytest.raises(LabelError, match=r"^x.png: label 12 is outside"):
        check_labels([ImageItem(Path("x.png"), 12)], 10)
