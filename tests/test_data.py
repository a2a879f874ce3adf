import pytest
from PIL import Image

from advimage.data import DataError, discover


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
