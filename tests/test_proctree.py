"""The process-tree memory sampler sees a child's memory, and the tree walk finds children and grandchildren."""
import os
import signal
import subprocess
import sys
import time

from dataengine.proctree import TreeRss, descendants, process_table

HOLD = "import sys, time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); time.sleep(30)"


def test_a_child_allocating_200_mib_raises_the_tree_peak():
    with TreeRss(every_s=0.02) as before:
        time.sleep(0.1)
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with TreeRss(every_s=0.02) as during:
            time.sleep(0.1)
        assert child.pid in descendants(process_table())
    finally:
        child.kill()
        child.wait()
    assert during.peak_total - before.peak_total > 150 * 2**20
    assert during.peak_one >= 200 * 2**20  # the child alone


def test_grandchildren_are_in_the_tree_and_strangers_are_not():
    code = ("import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
            "print(c.pid, flush=True); c.wait()")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        tree = descendants(process_table())
        assert child.pid in tree and grandchild in tree
        assert 1 not in tree  # init is nobody's descendant here
        assert tree.index(child.pid) < tree.index(grandchild)  # parents before children
    finally:
        os.kill(grandchild, signal.SIGKILL)
        child.kill()
        child.wait()
