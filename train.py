"""Train the spiking MLP on MNIST: ``python train.py --help``.

A thin script: the code is :mod:`snn.cli.train` (installed as the ``snn-train`` command), so that
``pip install`` puts no module named ``train`` on ``sys.path``.
"""

import os
import signal
import sys

if __name__ == "__main__":
    # Ctrl-C while torch loads (seconds): nothing is written yet, so leave quietly.
    signal.signal(signal.SIGINT, lambda *_: (sys.stderr.write("\ninterrupted.\n"), os._exit(130)))
    from snn.cli.train import script

    script()
