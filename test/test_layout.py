"""The package layout rules: the core never imports ROS, and no module grows past 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vpr_ros"
# Top-level modules that exist only in a ROS installation (or the colcon build's messages).
ROS_MODULES = {
    "rclpy",
    "rcl_interfaces",
    "launch",
    "launch_ros",
    "builtin_interfaces",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "nav_msgs",
    "visualization_msgs",
    "diagnostic_msgs",
    "lifecycle_msgs",
}
MAX_LINES = 450


def _python_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _imported_modules(path: Path, root: Path = PACKAGE.parent) -> set[str]:
    """Absolute module names ``path`` (under ``root``) imports anywhere, also inside functions."""
    package = ".".join(path.relative_to(root).with_suffix("").parts)
    if path.name == "__init__.py":
        package += ".__init__"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: -node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_core_modules_do_not_import_ros():
    offenders = []
    for path in _python_files():
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "ros":
            continue
        for name in _imported_modules(path):
            top = name.split(".")[0]
            if top in ROS_MODULES or name.split(".")[:2] in (["vpr_ros", "msg"], ["vpr_ros", "srv"]):
                offenders.append(f"{rel}: {name}")
    assert not offenders, "ROS imports outside vpr_ros/ros/:\n" + "\n".join(sorted(offenders))


def test_the_import_scan_sees_relative_and_nested_imports(tmp_path):
    # The rule above is only as good as this scan: a relative ``from ..msg import X`` inside a
    # function of vpr_ros/apps/x.py must resolve to vpr_ros.msg.
    module = tmp_path / "vpr_ros" / "apps" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from ..msg import LoopClosure\n    import rclpy.node\n")
    names = _imported_modules(module, tmp_path)
    assert "vpr_ros.msg" in names and "rclpy.node" in names


def test_no_module_is_longer_than_450_lines():
    long = [
        f"{p.relative_to(PACKAGE)}: {n} lines"
        for p in _python_files()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, "split these modules:\n" + "\n".join(long)
