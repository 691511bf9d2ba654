"""The process-tree memory sampler sees a child's memory, and the tree walk finds children and grandchildren."""
import os
import signal
import subprocess
import sys
import time

from dataengine.proctree import TreeRss, descendants, process_table

HOLD = "import sys, time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); time.sleep(30)"


def test_a_child_allocating_200_mib_is_counted_in_the_tree():
    # Measured on the child's own tree: other processes of this test session (Ray workers
    # of earlier tests winding down) would make a before/after difference of the whole tree flaky.
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with TreeRss(every_s=0.02, root=child.pid, pss=True) as alone:
            time.sleep(0.1)
        assert child.pid in descendants(process_table())
        whole, own = TreeRss().sample(), TreeRss(root=child.pid).sample()
        mine = int(open(f"/proc/{os.getpid()}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    finally:
        child.kill()
        child.wait()
    assert alone.peak_one >= 200 * 2**20 and alone.peak_total >= alone.peak_one
    assert alone.samples >= 3
    assert 150 * 2**20 < alone.peak_pss <= alone.peak_total  # its private pages; shared ones split
    assert whole >= mine + own - 8 * 2**20  # this process's tree holds the child (a few pages may move between samples)


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
