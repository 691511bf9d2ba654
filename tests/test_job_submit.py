"""The README's cluster path: `ray job submit -- dataengine run ...` against a real `ray start --head`.

Needs ray[default] (dashboard + job server + `ray job` CLI), a dependency. The head runs on
127.0.0.1 with free ports and its own --temp-dir, in its own session; the test stops only the
processes of that session and their descendants (never `ray stop`, which would also stop the
test session's local Ray), and checks at the end that the session's Ray still answers.

Ray replaces a loopback --node-ip-address by the machine's address unless
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (ray._private.services.get_node_ip_address), so the head
is started with it: everything then listens on, and the job's driver joins, 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus_factory import TINY_TOKENIZERS, tiny_recipe
from dataengine.proctree import descendants, process_table

BIN = Path(sys.executable).parent
PORTS = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
         "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
         "node-manager-port", "object-manager-port")  # every fixed default: another Ray here may hold it
JOB_TIMEOUT_S = 300


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _head_env() -> dict[str, str]:
    """The environment of the head and of every `ray job` call: as from a fresh shell, plus token auth.

    `ray start` turns token auth on by itself when ~/.ray/auth_token exists (any local ray.init writes
    one), while the `ray job` CLI sends a token only with RAY_AUTH_MODE=token: so set the mode, with a
    token of this test's own (RAY_AUTH_TOKEN), for both sides.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's entrypoint shell inherits this PATH
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0", DATAENGINE_PROGRESS="0",
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    return env


def _ray(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)


# waits for the job in one process (the SDK; this test's own process talks to its session's Ray instead)
POLL = """
import json, sys, time
from ray.job_submission import JobSubmissionClient
client, sub, deadline = JobSubmissionClient(sys.argv[1]), sys.argv[2], time.monotonic() + float(sys.argv[3])
while not client.get_job_status(sub).is_terminal() and time.monotonic() < deadline:
    time.sleep(2)
info = client.get_job_info(sub)
print(json.dumps({"status": info.status.value, "driver_ip": info.driver_info and info.driver_info.node_ip_address}))
"""


def _head_processes(sid: int) -> list[int]:
    """Every process of the head's session and everything below them (a job's entrypoint calls setsid)."""
    table = process_table()
    roots = [pid for pid, f in table.items() if len(f) > 3 and int(f[3]) == sid]
    found: list[int] = []
    for root in roots:
        found += [p for p in descendants(table, root) if p not in found]
    return [p for p in found if p != os.getpid()]


def _stop_head(sid: int) -> list[int]:
    """SIGTERM the head's processes, then SIGKILL what is left; returns the pids still alive after that."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        for pid in _head_processes(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while _head_processes(sid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not _head_processes(sid):
            return []
    return _head_processes(sid)


def _text_corpus(root: Path) -> None:
    from pydoc_data.topics import topics  # real English prose that ships with Python

    root.mkdir(parents=True)
    texts = [topics[k] for k in sorted(topics) if len(topics[k]) > 3000][:4]
    for i, text in enumerate(texts):
        (root / f"doc_{i}.txt").write_text(text[:2000])


def test_ray_job_submit_runs_dataengine_on_a_head(tmp_path, ray_local):
    corpus, jobdir, out = tmp_path / "corpus", tmp_path / "job", tmp_path / "out"
    _text_corpus(corpus)
    jobdir.mkdir()
    recipe = tiny_recipe(tmp_path, tokenizers={"text": TINY_TOKENIZERS["text"]})  # tokenizers fitted in tmp_path/toks
    recipe.rename(jobdir / "recipe.yaml")  # reaches the job only through --working-dir

    env = _head_env()
    ports = dict(zip(PORTS, _free_ports(len(PORTS))))
    url = f"http://127.0.0.1:{ports['dashboard-port']}"
    ray_tmp = tempfile.mkdtemp(prefix="de-job-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
             "--include-dashboard=true", "--num-cpus=2", "--object-store-memory=300000000",
             f"--temp-dir={ray_tmp}", "--disable-usage-stats", *(f"--{k}={v}" for k, v in ports.items())]
    head = subprocess.Popen(start, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own session: the handle for stopping it alone
    sid = head.pid
    sub = "dataengine-job-test"
    try:
        started, _ = head.communicate(timeout=120)
        assert head.returncode == 0, f"ray start failed:\n{started}"
        assert "127.0.0.1" in started and "Ray runtime started" in started, started

        submit = _ray("job", "submit", "--address", url, "--submission-id", sub, "--working-dir", str(jobdir),
                      "--no-wait", "--", "dataengine", "run", "recipe.yaml", "--input", str(corpus),
                      "--output", str(out), "--no-report", env=env)
        assert submit.returncode == 0 and "submitted successfully" in submit.stdout + submit.stderr, \
            submit.stdout + submit.stderr

        poll = subprocess.run([sys.executable, "-c", POLL, url, sub, str(JOB_TIMEOUT_S)], env=env,
                              capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 60)
        assert poll.returncode == 0, poll.stdout + poll.stderr
        job = json.loads(poll.stdout.strip().splitlines()[-1])
        st = _ray("job", "status", "--address", url, sub, env=env)
        lg = _ray("job", "logs", "--address", url, sub, env=env)
        status, logs = st.stdout + st.stderr, lg.stdout + lg.stderr
        assert job["status"] == "SUCCEEDED", f"job {job} (limit {JOB_TIMEOUT_S}s):\n{status}\n--- logs ---\n{logs}"
        assert f"Job '{sub}' succeeded" in status, status  # what `ray job status` prints
        assert job["driver_ip"] == "127.0.0.1", f"the entrypoint never joined the head as a driver: {job}"
        assert "run finished" in logs, logs
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["totals"]["sequences"] > 0, manifest["totals"]
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
        left = _stop_head(sid)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not left, f"head processes left behind: {left}"
    # the session's own Ray was not touched
    assert ray_local.is_initialized() and ray_local.data.range(4).sum("id") == 6
