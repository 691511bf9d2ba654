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


def _tar(path, members):
    import io
    import tarfile

    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data, kw in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for k, v in kw.items():
                setattr(info, k, v)
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)


def test_raw_tar_shards_group_by_key_and_refuse_unsafe_members(tmp_path):
    import json

    from dataengine.decode import read_input

    _tar(tmp_path / "s.tar", [("k1.jpg", b"JPG", {}), ("k1.txt", b"cap", {}), ("k1.json", b"{}", {}),
                              ("./k2.seg.png", b"PNG", {}), ("../up.txt", b"x", {}), ("/abs.txt", b"x", {}),
                              ("l.jpg", b"", {"type": b"2", "linkname": "/etc/passwd"}),
                              ("d.wav", b"", {"type": b"3"}), ("k3.png", b"a", {}), ("k3.png", b"b", {})])
    found = discover([("src", tmp_path)], max_file_bytes=100)
    units = {u.media: u for u in found.units}
    assert set(units) == {"s.tar#k1.jpg", "s.tar#k2.seg.png"}
    u = units["s.tar#k1.jpg"]
    assert (u.kind, u.caption, u.sidecar) == ("image", "s.tar#k1.txt", "s.tar#k1.json")
    assert read_input(tmp_path, u.media, 100, u.stamps) == b"JPG"
    assert read_input(tmp_path, u.caption, 100) == b"cap"  # no stamp: the member is found by listing
    assert set(json.loads(u.stamps)) == {u.media, u.caption, u.sidecar}
    reasons = sorted((r["path"], r["reason"]) for r in found.rejects)
    assert reasons == [("s.tar#../up.txt", "unsafe_member_path"), ("s.tar#/abs.txt", "unsafe_member_path"),
                       ("s.tar#d.wav", "special_member"), ("s.tar#k3.png", "duplicate_member"),
                       ("s.tar#k3.png", "duplicate_member"), ("s.tar#l.jpg", "link_member")]
    used = [p for u in found.units for _, p in u.files()]
    assert sorted(used + [p for p, _ in reasons]) == sorted(p for _, p in found.files)


def test_links_loops_and_undecodable_names_are_rejects_not_crashes(tmp_path):
    root = tmp_path / "in"
    touch(root / "ok.txt")
    os.symlink(root / "b.txt", root / "a.txt")
    os.symlink(root / "a.txt", root / "b.txt")
    os.symlink(root / "gone.png", root / "dangling.png")
    os.mkfifo(root / "pipe.wav")
    with open(os.fsencode(str(root)) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"x")
    found = discover([("s", root)], max_file_bytes=100)
    reasons = {r["path"]: r["reason"] for r in found.rejects}
    assert reasons == {"a.txt": "symlink_loop", "b.txt": "symlink_loop", "dangling.png": "broken_symlink",
                       "pipe.wav": "not_a_file", "caf\\xe9.txt": "bad_filename"}
    assert [u.media for u in found.units] == ["ok.txt"]
