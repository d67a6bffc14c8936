"""The public surface is exactly ``ppml.__all__``, kept sorted."""

import ppml


def test_all_is_sorted_and_complete() -> None:
    assert ppml.__all__ == sorted(ppml.__all__, key=lambda name: (not name[0].isupper(), name.lower()))
    public = {name for name in dir(ppml) if not name.startswith("_")} - {"annotations"}
    submodules = {"errors", "files", "kms", "fileformat", "cli", "workloads"}
    assert public - submodules <= set(ppml.__all__)
    for name in ppml.__all__:
        assert hasattr(ppml, name), name
