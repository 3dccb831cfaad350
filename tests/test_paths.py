"""The directories a command makes for a check, and their removal when it is refused."""

from __future__ import annotations

from pathlib import Path

from study.paths import make_dirs, remove_if_empty


def test_made_directories_are_listed_deepest_first_and_removed_while_empty(
    tmp_path: Path,
) -> None:
    root = tmp_path / "a" / "b" / "c"
    created = make_dirs(root)
    assert created == [root, root.parent, root.parent.parent] and root.is_dir()
    remove_if_empty(created)
    assert list(tmp_path.iterdir()) == []


def test_what_existed_or_was_written_meanwhile_stays(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    assert make_dirs(tmp_path / "mine") == []
    created = make_dirs(tmp_path / "mine" / "study" / "inner")
    (tmp_path / "mine" / "study" / "other.txt").write_text("another process's")
    created[0].rmdir()  # already gone: passed over
    remove_if_empty(created)
    assert sorted(p.name for p in (tmp_path / "mine" / "study").iterdir()) == ["other.txt"]
