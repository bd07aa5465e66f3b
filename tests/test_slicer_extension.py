"""The Slicer extension's packaging: CMake lists every shipped file and resource, the Slicer test is registered,
the shipped Python parses as Python 3.9 (Slicer 5.6-5.8's Python), and the docs' picture exists."""
import ast
import re
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SegmentAnythingMed"
EFFECT_DIR = MODULE_DIR / "SegmentEditorSegmentAnythingMedLib"  # the file Slicer loads as the effect, alone
OURS = [MODULE_DIR / "SegmentAnythingMed.py", *sorted((MODULE_DIR / "SegmentAnythingMedLib").glob("*.py")),
        *sorted(EFFECT_DIR.glob("*.py")), *sorted((MODULE_DIR / "Testing").rglob("*.py"))]


def shipped_python_files():
    """Every .py under SegmentAnythingMed/ that Slicer loads: all but the Testing folder and build leftovers."""
    out = []
    for p in MODULE_DIR.rglob("*.py"):
        rel = p.relative_to(MODULE_DIR)
        if "__pycache__" in rel.parts or rel.parts[0] == "Testing" or rel.parts[0].endswith(".egg-info"):
            continue
        out.append(rel.as_posix())
    return sorted(out)


def cmake_entries(path, suffix):
    text = re.sub(r"#[^\n]*", "", path.read_text())
    return sorted(set(re.findall(r"[\w./${}-]+" + re.escape(suffix), text)))


def test_module_cmake_lists_every_shipped_python_file_and_nothing_else():
    listed = cmake_entries(MODULE_DIR / "CMakeLists.txt", ".py")
    listed = [p.replace("${MODULE_NAME}", "SegmentAnythingMed") for p in listed]
    shipped = shipped_python_files()
    missing = sorted(set(shipped) - set(listed))
    stale = sorted(set(listed) - set(shipped))
    assert not missing, "add to SAMED_PYTHON_SCRIPTS / MODULE_PYTHON_SCRIPTS in SegmentAnythingMed/CMakeLists.txt:\n  " + \
        "\n  ".join(missing)
    assert not stale, "listed in SegmentAnythingMed/CMakeLists.txt but not in the tree:\n  " + "\n  ".join(stale)


def test_module_cmake_builds_a_scripted_module_with_its_icons_and_tests():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert re.search(r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}", text)
    assert "WITH_GENERIC_TESTS" in text and "add_subdirectory(Testing)" in text
    for resource in cmake_entries(MODULE_DIR / "CMakeLists.txt", ".png"):
        path = MODULE_DIR / resource.replace("${MODULE_NAME}", "SegmentAnythingMed")
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 16 and image.mode in ("RGBA", "RGB")
    assert sorted(p.name for p in (MODULE_DIR / "Resources" / "Icons").glob("*.png")) == \
        ["SegmentAnythingMed.png", "SegmentEditorEffect.png"]


def test_the_slicer_self_test_is_registered_and_is_a_unittest():
    testing = (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").read_text()
    (script,) = re.findall(r"slicer_add_python_unittest\(SCRIPT (\S+)\)", testing)
    tree = ast.parse((MODULE_DIR / "Testing" / "Python" / script).read_text())
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes and any(f.name.startswith("test_") for c in classes for f in c.body if isinstance(f, ast.FunctionDef))
    module = ast.parse((MODULE_DIR / "SegmentAnythingMed.py").read_text())
    names = {n.name for n in module.body if isinstance(n, ast.ClassDef)}
    assert {"SegmentAnythingMed", "SegmentAnythingMedWidget", "SegmentAnythingMedLogic",
            "SegmentAnythingMedTest"} <= names


def test_extension_cmake_has_the_slicer_extension_pieces():
    text = (ROOT / "CMakeLists.txt").read_text()
    for piece in ("cmake_minimum_required", "project(SegmentAnythingMed)", 'set(EXTENSION_CATEGORY "Segmentation")',
                  "EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                  "EXTENSION_SCREENSHOTURLS", 'set(EXTENSION_DEPENDS "PyTorch")', "find_package(Slicer REQUIRED)",
                  "include(${Slicer_USE_FILE})", "add_subdirectory(SegmentAnythingMed)",
                  "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert piece in text, piece


@pytest.mark.parametrize("path", [MODULE_DIR / p for p in shipped_python_files()] + OURS[-1:],
                         ids=lambda p: p.relative_to(MODULE_DIR).as_posix())
def test_shipped_python_parses_as_python_3_9(path):
    ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 9))


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.relative_to(MODULE_DIR).as_posix())
def test_slicer_side_has_no_bare_except_and_no_qt_outside_the_qt_layer(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not [h for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and h.type is None], "bare except"
    qt_layer = {"SegmentAnythingMed.py", "segment_editor_effect.py"}
    if path.name not in qt_layer and path.parent.name == "SegmentAnythingMedLib":
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in (n.names if isinstance(n, ast.Import) else [type("m", (), {"name": n.module or ""})])}
        assert not imported & {"qt", "ctk", "torch"}, f"{path.name} imports {imported & {'qt', 'ctk', 'torch'}}"
    assert len(path.read_text().splitlines()) <= 400, "one concept per file: split it"


def test_docs_describe_installing_and_show_a_result_picture():
    text = (ROOT / "docs" / "slicer.md").read_text()
    for topic in ("Extension Wizard", "Additional module paths", "PyTorch", "model service", "Segment Anything",
                  "Propagate", "Apply", "images/result.png"):
        assert topic in text, topic
    versions = text[text.index("Supported Slicer versions"):text.index("### Using the effect")]
    for version in ("5.2, 5.4, 5.6, 5.8", "5.10, 5.12, main", "3.9.10", "3.12.10", "checked by", "bb06cef09d"):
        assert version in versions, f"docs/slicer.md: say which Slicer versions are supported and how: {version}"
    assert "5.2 or newer" not in text
    with Image.open(ROOT / "docs" / "images" / "result.png") as image:
        assert image.format == "PNG" and image.size[0] >= 400


def test_the_effect_file_slicer_loads_is_alone_in_its_folder_and_only_imports_the_class():
    """setPythonSource names the effect's module after the file's folder; 5.10+ replace sys.modules[<folder>] by that
    file (tests/test_slicer_loading.py replays it). So: a folder of its own, no package there, one import."""
    import slicer_fakes

    slicer_fakes.install()
    import SegmentAnythingMed as module

    assert Path(module.EFFECT_SOURCE) == EFFECT_DIR / "SegmentEditorEffect.py"
    assert sorted(p.name for p in EFFECT_DIR.iterdir() if p.name != "__pycache__") == ["SegmentEditorEffect.py"]
    tree = ast.parse((EFFECT_DIR / "SegmentEditorEffect.py").read_text())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert len(body) == 1 and isinstance(body[0], ast.ImportFrom)
    assert body[0].module.startswith("SegmentAnythingMedLib.") and [a.name for a in body[0].names] == \
        ["SegmentEditorEffect"]
