from __future__ import annotations

import pytest

from crossmodal.errors import ConfigError
from crossmodal.registry import Registry


def test_register_build_and_list():
    reg = Registry("widget")

    @reg.register("b")
    class B:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    @reg.register("a")
    def make_a() -> str:
        return "a"

    assert reg.names() == ["a", "b"]
    assert "b" in reg and "c" not in reg
    assert reg.build("b", size=3).size == 3
    assert reg.build("a") == "a"
    assert B.registry_name == "b"


def test_unknown_name_lists_registered_and_key():
    reg = Registry("widget")
    reg.register("alpha")(type("Alpha", (), {}))
    with pytest.raises(ConfigError, match=r"^model.widget: unknown widget 'beta'; registered widgets: alpha$"):
        reg.get("beta", key="model.widget")


def test_double_registration_is_an_error():
    reg = Registry("widget")
    reg.register("x")(type("X1", (), {}))
    with pytest.raises(ConfigError, match="registered twice"):
        reg.register("x")(type("X2", (), {}))


def test_every_plugin_package_is_installed_with_the_framework():
    """A plugin folder missing from setup.cfg's package list imports from a checkout but not from
    an installed crossmodal (its registry then fails to load)."""
    import configparser
    from pathlib import Path

    from crossmodal.registry import _PLUGIN_PACKAGES

    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    included = set(parser["options.packages.find"]["include"].split())
    for packages in _PLUGIN_PACKAGES.values():
        for package in packages:
            assert package.split(".")[0] in included, package
