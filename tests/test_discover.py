import os

from dataengine.discover import discover


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_groups_by_stem_and_rejects_what_it_cannot_use(tmp_path):
    root = tmp_path / "in"
    touch(root / "a" / "cat.jpg")
    touch(root / "a" / "cat.txt")
    touch(root / "a" / "walk.csv")
    touch(root / "a" / "walk.json")
    touch(root / "a" / "talk.wav")
    touch(root / "a" / "talk.md")
    touch(root / "a" / "clip.mp4")
    touch(root / "b" / "essay.txt")
    touch(root / "b" / "chat.jsonl")
    touch(root / "b" / "lonely.json")
    touch(root / "b" / "tool.exe")
    touch(root / "b" / ".DS_Store")
    touch(root / "b" / "huge.png", b"x" * 2000)
    outside = tmp_path / "secret.txt"
    touch(outside)
    os.symlink(outside, root / "b" / "link.txt")

    found = discover([("src", root)], max_file_bytes=1000)
    units = {u.media: u for u in found.units}
    assert units["a/cat.jpg"].kind == "image" and units["a/cat.jpg"].caption == "a/cat.txt"
    assert units["a/walk.csv"].kind == "sensor" and units["a/walk.csv"].sidecar == "a/walk.json"
    assert units["a/talk.wav"].kind == "audio" and units["a/talk.wav"].caption == "a/talk.md"
    assert units["a/clip.mp4"].kind == "video" and units["a/clip.mp4"].caption is None
    assert units["b/essay.txt"].kind == "text"
    assert units["b/chat.jsonl"].kind == "jsonl"
    reasons = {r["path"]: r["reason"] for r in found.rejects}
    assert reasons == {
        "b/lonely.json": "orphan_sidecar",
        "b/tool.exe": "unsupported_extension",
        "b/.DS_Store": "hidden_file",
        "b/huge.png": "file_too_large",
        "b/link.txt": "symlink_outside_root",
    }
    # every file is either used by a unit or rejected, exactly once
    used = {p for u in found.units for _, p in u.files()}
    seen = {p for _, p in found.files}
    assert used | set(reasons) == seen and not used & set(reasons)


def test_ids_are_stable_and_key_safe(tmp_path):
    touch(tmp_path / "x.y.png")
    a = discover([("s", tmp_path)], max_file_bytes=10)
    b = discover([("s", tmp_path)], max_file_bytes=10)
    assert [u.unit_id for u in a.units] == [u.unit_id for u in b.units]
    assert all("." not in u.unit_id and "/" not in u.unit_id for u in a.units)
    c = discover([("other", tmp_path)], max_file_bytes=10)
    assert c.units[0].unit_id != a.units[0].unit_id


def test_missing_source_is_a_reject(tmp_path):
    found = discover([("s", tmp_path / "absent")], max_file_bytes=10)
    assert found.rejects[0]["reason"] == "missing_source" and not found.units
