"""The plugin catalogue (core/lib/plugin_index.py)."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from replicator.core.config.catalogue import build_plugins
from replicator.core.errors import RecipeError
from replicator.core.lib import plugin_index as PI


def test_every_builtin_resolves_to_its_class():
    cat = PI.catalogue(found=[])
    assert set(cat) == set(PI.BUILTINS)
    for name, target in PI.BUILTINS.items():
        cls = cat[name]
        assert isinstance(cls, type) and cls.__name__ == target.rsplit(":", 1)[1]
        assert cls.__module__ == target.split(":")[0]
        assert cat.origin(name)[0] == PI.DISTRIBUTION
    assert dict(cat.items())["clip_probs"].__name__ == "ClipProbs"
    assert cat.origin("nope") == (None, None)


def test_entry_points_add_plugins_but_never_shadow_builtins():
    ep = EntryPoint("my_clip", "replicator.plugins.clip_probs:ClipProbs", PI.ENTRY_POINT_GROUP)
    cat = PI.catalogue(found=[ep])
    assert cat["my_clip"].__name__ == "ClipProbs" and cat.origin("my_clip") == (None, None)
    shadow = EntryPoint("clip_probs", "x:Y", PI.ENTRY_POINT_GROUP)
    with pytest.raises(RecipeError, match="shadows a built-in"):
        PI.catalogue(found=[shadow])


def test_unknown_plugin_suggests_a_name():
    with pytest.raises(RecipeError, match="did you mean 'clip_probs'"):
        build_plugins({"data": {"use": "kaggle_csv"}, "clip": {"use": "clip_prob"}}, "t.yaml",
                      cat=PI.catalogue(found=[]), unused=("prompt_format", "head", "loss"))
