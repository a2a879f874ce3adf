"""ImageNet-1k class metadata (names and WordNet ids), from timm's bundled tables (no network)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def wnids() -> tuple[str, ...]:
    """The 1000 WordNet ids in class-index order."""
    from timm.data import ImageNetInfo
    return tuple(ImageNetInfo().label_names())


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """Short readable name of each of the 1000 classes (first synonym), in index order."""
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    return tuple(info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes()))


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(wnids())}
