"""The public surface is exactly ``ppml.__all__``, kept sorted."""

import types

import ppml


def test_all_is_sorted_and_complete() -> None:
    assert ppml.__all__ == sorted(ppml.__all__, key=lambda name: (not name[0].isupper(), name.lower()))
    public = {name for name in dir(ppml)
              if not name.startswith("_") and not isinstance(getattr(ppml, name), types.ModuleType)}
    assert public - {"annotations"} == set(ppml.__all__) - {"__version__"}
