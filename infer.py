"""Run the trained spiking MLP on MNIST test images or your own digits: ``python infer.py --help``.

A thin script: the code is :mod:`snn.cli.infer` (installed as the ``snn-infer`` command), so that
``pip install`` puts no module named ``infer`` on ``sys.path``.
"""

import os
import signal
import sys

if __name__ == "__main__":
    # Ctrl-C while torch loads (seconds): nothing is written yet, so leave quietly.
    signal.signal(signal.SIGINT, lambda *_: (sys.stderr.write("\ninterrupted.\n"), os._exit(130)))
    from snn.cli.infer import script

    script()
