import subprocess
import sys

import numpy as np

from embodied_pref.process_memory import peak_rss_bytes


def test_a_process_started_by_a_large_one_reports_its_own_peak():
    ballast = np.ones(300_000_000 // 8)  # 300 MB, touched
    parent = peak_rss_bytes()
    child = int(subprocess.check_output(
        [sys.executable, "-c", "from embodied_pref.process_memory import peak_rss_bytes; print(peak_rss_bytes())"]))
    assert ballast.sum() > 0
    assert parent > 300_000_000 and child < parent - 200_000_000, (parent, child)
