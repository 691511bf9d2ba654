import os

from corpus_factory import raw_tar_header

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
    for name in ("pair.jpg", "pair.wav", "pair.txt", "pair.json"):  # whose caption? neither's
        touch(root / "c" / name)
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
    assert units["c/pair.jpg"].caption is units["c/pair.wav"].caption is None
    assert units["c/pair.jpg"].sidecar is units["c/pair.wav"].sidecar is None
    reasons = {r["path"]: r["reason"] for r in found.rejects}
    assert reasons == {
        "b/lonely.json": "orphan_sidecar",
        "b/tool.exe": "unsupported_extension",
        "b/.DS_Store": "hidden_file",
        "b/huge.png": "file_too_large",
        "b/link.txt": "symlink_outside_root",
        "c/pair.txt": "shared_caption",
        "c/pair.json": "shared_sidecar",
    }
    assert "pair.jpg, c/pair.wav" in {r["path"]: r["detail"] for r in found.rejects}["c/pair.txt"]
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


def _mkdirs_fd(top, name: str, depth: int) -> int:
    """`depth` nested folders `name` under `top`, made through folder fds (past PATH_MAX); the deepest's fd."""
    fd = os.open(top, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        nxt = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    return fd


def _rmdirs_fd(top, name: str, depth: int, leaf: str) -> None:
    """Remove what `_mkdirs_fd` made, bottom up and one fd at a time (shutil.rmtree recurses per level)."""
    fd = os.open(top, os.O_RDONLY)
    for _ in range(depth):
        nxt = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.unlink(leaf, dir_fd=fd)
    for _ in range(depth):
        parent = os.open("..", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        os.rmdir(name, dir_fd=parent)
        fd = parent
    os.close(fd)


def test_any_depth_any_path_length_and_folders_that_are_not_walked(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    fd = _mkdirs_fd(root, "d", 1100)  # os.walk's recursion stops near 1000 levels
    leaf = os.open("bottom.txt", os.O_CREAT | os.O_WRONLY, dir_fd=fd)
    os.write(leaf, b"a document at the bottom of a deep tree\n")
    os.close(leaf)
    os.close(fd)
    fd = _mkdirs_fd(root, "n" * 250, 18)  # about 4,500 bytes: longer than the system's path limit
    leaf = os.open("far.txt", os.O_CREAT | os.O_WRONLY, dir_fd=fd)
    os.write(leaf, b"out of reach\n")
    os.close(leaf)
    os.close(fd)
    (root / "d.tar").write_bytes(b"\0" * 1024)
    (root / "d.tar#x").mkdir()  # would read as a member of d.tar
    (root / "d.tar#x" / "a.txt").write_text("looks like a tar member\n")
    (root / "sub" / ".git").mkdir(parents=True)
    (root / "sub" / ".git" / "HEAD.txt").write_text("ref: refs/heads/main\n")
    (root / "sub" / "keep.txt").write_text("kept\n")
    try:
        found = discover([("s", root)], max_file_bytes=1 << 20)
    finally:
        _rmdirs_fd(root, "d", 1100, "bottom.txt")  # pytest's clean-up of tmp_path would recurse past the limit
    reasons = {r["path"]: r["reason"] for r in found.rejects}
    medias = {u.media for u in found.units}
    assert "d/" * 1100 + "bottom.txt" in medias
    assert "sub/keep.txt" in medias and len(medias) == 2, medias
    assert reasons.pop("d.tar#x") == "reserved_name" and reasons.pop("sub/.git") == "hidden_folder"
    assert reasons.pop("d.tar") == "empty_file"  # end-of-archive zeros only
    assert list(reasons.values()) == ["path_too_long"], reasons  # the first folder past the limit: one row
    assert len(next(iter(reasons))) > 4000


def test_tar_headers_are_bounded_in_discovery(tmp_path):
    import io
    import tarfile

    root = tmp_path / "in"
    root.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("ok.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"ok\n"))
    good = buf.getvalue()[:1024]  # one member, without the end-of-archive blocks
    record = b"9" * 250_000 + b" size=1\n"
    (root / "pax_digits.tar").write_bytes(good + raw_tar_header(b"a.txt", b"%011o\0" % len(record), b"x", record))
    (root / "negative.tar").write_bytes(good + raw_tar_header(b"a.txt", b"\xff" * 12) + b"\0" * 1024)
    found = discover([("s", root)], max_file_bytes=1 << 20)
    reasons = {r["path"]: (r["reason"], r["detail"]) for r in found.rejects}
    assert reasons["pax_digits.tar"][0] == "corrupt_archive" and "at most 20 digits" in reasons["pax_digits.tar"][1]
    assert reasons["negative.tar"][0] == "corrupt_archive" and "negative" in reasons["negative.tar"][1]
    assert {u.media for u in found.units} == {"pax_digits.tar#ok.txt", "negative.tar#ok.txt"}
